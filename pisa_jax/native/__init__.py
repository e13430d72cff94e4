"""Native CPU kernels that XLA calls through its FFI: oneDNN's convolutions (`onednn`),
compiled on first use from the C++ source beside this file (`build`). Optional: they need the
`onednn` extra and a C++ compiler; everything else in the project runs without them."""
