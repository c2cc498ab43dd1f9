"""Repository-wide checks: namespaces, import cycles, the backend contract, the docs,
the benchmarks, the documented differences from PyTorch.
"""
