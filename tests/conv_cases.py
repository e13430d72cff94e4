"""3D convolution shapes shared by the lowering tests: name -> (x [N, T, H, W, I],
kernel (kt, kh, kw), O, stride, padding)."""
CONVS_3D = {
    "3x3x3": ((2, 5, 9, 9, 4), (3, 3, 3), 6, (1, 1, 1), (1, 1, 1)),
    "3x3x3 stride 2": ((2, 5, 9, 9, 4), (3, 3, 3), 6, (2, 2, 2), (1, 1, 1)),
    "hara stem, time stride 2": ((1, 6, 12, 12, 3), (7, 7, 7), 5, (2, 2, 2), (3, 3, 3)),
    "torchvision stem": ((1, 4, 12, 12, 3), (3, 7, 7), 5, (1, 2, 2), (1, 3, 3)),
    "1x1x1 stride 2": ((2, 5, 8, 8, 4), (1, 1, 1), 6, (2, 2, 2), (0, 0, 0)),
    "T=1": ((2, 1, 4, 4, 8), (3, 3, 3), 4, (1, 1, 1), (1, 1, 1)),
    "kernel longer than T": ((1, 2, 6, 6, 2), (7, 3, 3), 3, (1, 1, 1), (3, 1, 1)),
}
