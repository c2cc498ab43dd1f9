"""Tests of the elementwise and per-channel kernels: batch norm, LRN, ReLU and the
activations, cross-entropy, linear.
"""
