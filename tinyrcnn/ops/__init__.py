"""One op per file: its Function (forward saves what backward needs), its NumPy path and, for
the kernel-backed ops, the dispatch to its CUDA kernel in `kernels/`."""
