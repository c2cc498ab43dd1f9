# Shared with the other bindings that call the BLAS from inside the core's
# OpenMP team (_linear.pyx): one hold on SciPy's BLAS threads for them all.
cdef void _blas_enter() noexcept
cdef void _blas_exit() noexcept
