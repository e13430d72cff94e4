"""Native CPU kernels that XLA calls through its FFI, compiled on first use from the C++ source
beside this file (`build`): oneDNN's convolutions and max-pool (`onednn`; needs the `onednn`
extra), and, needing only a C++ compiler, the one-pass Adam step (`adam`), BatchNorm's one-pass
sums (`batch_norm_sums`) and the stacked stems' input (`frame_stack`). All optional: without
them the project runs on XLA's own operations."""
