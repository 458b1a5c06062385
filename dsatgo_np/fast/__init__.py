"""The CPU speed layer: the plain core's kernels made fast for NumPy arrays on a CPU.

    neuron.py     the LIF loops a cache-sized block of neurons at a time; statistics from row sums
    layers.py     Linear through parallel.matmul; BatchNorm from per-channel sums, two passes
    conv.py       convolution by im2col and one GEMM per chunk of samples ("wide rows" at stride 1)
    pooling.py    average pooling by strided sums; its backward as one matrix product
    parallel.py   shares independent blocks of work between CPU threads (DSATGO_THREADS)
    allocator.py  keeps freed arrays in malloc's heap (opt-in: DSATGO_MALLOC=keep)

Each kernel has the contract of its namesake in the plain core and is tested equal to it
(tests/test_kernels.py); dsatgo_np/kernels.py decides which one the model calls.
"""
