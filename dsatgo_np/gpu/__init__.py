"""The GPU speed layer: the plain core's numbers as CUDA kernels for CuPy arrays.

    neuron.py   the LIF neuron over all steps, its statistics and rule fused (one thread a neuron)
    stats.py    a layer's mean and std, BatchNorm's channel sums: one read, float64 sums
    layers.py   tdBN forward and backward, the SGD update
    conv.py     conv2d as im2col chunks and cuBLAS matrix products
    precision.py  the opt-in for TF32 tensor cores
    build.py    compiling and caching the kernels

kernels.py's "gpu" table takes its kernels from here; each is tested against the plain core
(tests/test_gpu_kernels.py), on a GPU and, compiled as C++ by tests/cuda_emulator.py, on a CPU.
"""
