# Helpers shared by the bindings (textually included): a C status code turned
# into an exception, and a memory-safety check of a buffer's element count.

cdef inline void _raise(int status, str what) except *:
    if status == CC_ENOMEM:
        raise MemoryError(f"{what}: out of memory")
    if status != CC_OK:
        raise RuntimeError(f"{what}: C core rejected its arguments (status {status})")


cdef inline void _need(Py_ssize_t have, Py_ssize_t want, str name) except *:
    if have != want:
        raise ValueError(f"{name} has {have} elements, expected {want}")
