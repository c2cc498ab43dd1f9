# cython: language_level=3
"""NumPy's data allocator with convcore's cache of large freed blocks
(src_c/mem.c).

Installed by ``convcore.set_memory_cache`` (off by default): arrays of at
least ``min_block`` bytes are served, when a block of exactly their size was
freed before, from that block instead of a fresh mapping the kernel must
fault in page by page.  Every other request goes to the C library as
before.  Arrays remember the allocator that made them, so arrays made
before it was installed, or after it was removed, are freed correctly.
"""
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memset, strncpy
from libc.stdint cimport uint8_t

cdef extern from "Python.h":
    object PyCapsule_New(void *pointer, const char *name, void *destructor)

cdef extern from "convcore.h" nogil:
    void cc_mem_configure(size_t min_bytes, size_t budget_bytes)
    void *cc_mem_take(size_t size)
    int cc_mem_keep(void *p, size_t size)
    void cc_mem_stats(size_t *kept_bytes, int *blocks, unsigned long long *n_hits,
                      unsigned long long *n_misses)
    int cc_mem_populate(void *p, size_t size)

cdef extern from *:
    """
    #define NPY_NO_DEPRECATED_API NPY_1_22_API_VERSION
    #define NPY_TARGET_VERSION NPY_1_22_API_VERSION
    #include <numpy/arrayobject.h>
    static int cc_mem_import_numpy(void) { import_array1(-1); return 0; }
    """
    ctypedef struct PyDataMemAllocator:
        void *ctx
        void *(*malloc)(void *ctx, size_t size) noexcept nogil
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize) noexcept nogil
        void *(*realloc)(void *ctx, void *ptr, size_t new_size) noexcept nogil
        void (*free)(void *ctx, void *ptr, size_t size) noexcept nogil
    ctypedef struct PyDataMem_Handler:
        char name[127]
        uint8_t version
        PyDataMemAllocator allocator
    int cc_mem_import_numpy() except -1
    object PyDataMem_SetHandler(object handler)


cdef void *_malloc(void *ctx, size_t size) noexcept nogil:
    cdef void *p = cc_mem_take(size)
    return p if p != NULL else malloc(size)


cdef void *_calloc(void *ctx, size_t nelem, size_t elsize) noexcept nogil:
    cdef size_t size
    cdef void *p
    if elsize != 0 and nelem > (<size_t>-1) // elsize:
        return NULL
    size = nelem * elsize
    p = cc_mem_take(size)
    if p != NULL:
        memset(p, 0, size)
        return p
    return calloc(nelem, elsize)


cdef void *_realloc(void *ctx, void *ptr, size_t new_size) noexcept nogil:
    return realloc(ptr, new_size)


cdef void _free(void *ctx, void *ptr, size_t size) noexcept nogil:
    if not cc_mem_keep(ptr, size):
        free(ptr)


cdef PyDataMem_Handler _handler
strncpy(_handler.name, b"convcore_block_cache", 126)
_handler.version = 1
_handler.allocator.ctx = NULL
_handler.allocator.malloc = _malloc
_handler.allocator.calloc = _calloc
_handler.allocator.realloc = _realloc
_handler.allocator.free = _free

cc_mem_import_numpy()
#: the capsule NumPy takes (it must outlive every array made with it: module-level)
handler = PyCapsule_New(&_handler, b"mem_handler", NULL)


def install(min_block, budget):
    """Keep freed blocks of at least ``min_block`` bytes, up to ``budget``
    bytes, and make NumPy allocate through the cache in this context.
    Returns the handler that was in use."""
    cc_mem_configure(min_block, budget)
    return PyDataMem_SetHandler(handler)


def configure(min_block, budget):
    """Change the cache's limits (a budget of 0 releases every kept block)."""
    cc_mem_configure(min_block, budget)


def restore(previous):
    """Make ``previous`` (from :func:`install`) NumPy's allocator again."""
    PyDataMem_SetHandler(previous)


def stats():
    """(bytes kept, blocks kept, requests served from the cache, large
    requests that were not)."""
    cdef size_t kept = 0
    cdef int blocks = 0
    cdef unsigned long long hits = 0, misses = 0
    cc_mem_stats(&kept, &blocks, &hits, &misses)
    return int(kept), int(blocks), int(hits), int(misses)


def populate(size_t address, size_t nbytes):
    """Fault in the pages of a fresh block (``address``, ``nbytes``: an array's
    data) for writing, in one call; True if done (see src_c/mem.c)."""
    cdef int done
    with nogil:
        done = cc_mem_populate(<void *>address, nbytes)
    return bool(done)
