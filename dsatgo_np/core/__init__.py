"""The plain core: each equation of the method once, in whole-array code for NumPy and CuPy.

    surrogate.py  the spike and its rectangular surrogate gradient, TGO's dynamic width
    threshold.py  the adaptive threshold: layer statistics, running average, estimated variant
    neuron.py     LIF / PLIF over time and its BPTT; the Rule of each method
    layers.py     linear, tdBN, dropout;  conv.py  conv2d;  pooling.py  average/max/global
    losses.py     cross-entropy and MSE on the readout averaged over T
    update.py     the SGD update

Each forward has its backward beside it, derived in DERIVATIONS.md. The core imports only
backend.py; fast/ and gpu/ compute the same faster, tested equal (kernels.py picks).
"""
