/* Memory family: a cache of large freed blocks.
 *
 * glibc maps every block above its mmap threshold (convcore sets 16 MiB, see
 * convcore/_core/__init__.py) fresh from the system and unmaps it on free,
 * so each activation or gradient of a large network is faulted in page by
 * page, zeroed by the kernel, at every step (ResNet-50 training at batch 4:
 * about 4,000 faults a step).  Serving such blocks from the heap instead
 * fragments it.  Here, once a budget is set (convcore.set_memory_cache;
 * none by default), freed blocks of at least `min_block` bytes are kept, up
 * to `budget` bytes in all, and handed out again for a request of exactly
 * the same size -- a network's steps ask for
 * the same sizes over and over.  When a block does not fit the budget the
 * oldest kept blocks are released first.  (Releasing kept blocks whenever a
 * fresh one would take the large blocks in use plus those kept past their
 * earlier peak kept ResNet-50 training's peak lower, 681 against 701 MiB,
 * but made ResNet-18 inference at batch 16 evict and re-fault blocks it
 * needed: more page faults than without the cache.)  Thread-safe (one mutex); no
 * Python.  The NumPy allocator built on it lives in convcore/_core/_mem.pyx. */
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE /* (madvise in <sys/mman.h> under a strict -std) */
#endif
#include "convcore.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#if !defined(MADV_POPULATE_WRITE)
#define MADV_POPULATE_WRITE 23 /* (Linux 5.14; older kernels refuse it: EINVAL) */
#endif
#endif

#define CC_MEM_SLOTS 256

typedef struct {
    void *p;
    size_t size;
} cc_mem_slot;

static cc_mem_slot slots[CC_MEM_SLOTS];   /* oldest first */
static int nslots;
static size_t kept, min_block = (size_t)16 << 20, budget;
static unsigned long long hits, misses;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* (with mu held) release the oldest blocks until `need` more bytes fit */
static void mem_evict(size_t need)
{
    int i = 0, j;
    while (i < nslots && (kept + need > budget)) {
        kept -= slots[i].size;
        free(slots[i].p);
        ++i;
    }
    if (i == 0) return;
    for (j = i; j < nslots; ++j) slots[j - i] = slots[j];
    nslots -= i;
}

void cc_mem_configure(size_t min_bytes, size_t budget_bytes)
{
    pthread_mutex_lock(&mu);
    min_block = min_bytes > 0 ? min_bytes : 1;
    budget = budget_bytes;
    mem_evict(0);
    pthread_mutex_unlock(&mu);
}

void *cc_mem_take(size_t size)
{
    void *p = NULL;
    int i;
    if (size < min_block) return NULL;
    pthread_mutex_lock(&mu);
    for (i = nslots - 1; i >= 0; --i)   /* the most recently kept first */
        if (slots[i].size == size) {
            p = slots[i].p;
            kept -= size;
            memmove(slots + i, slots + i + 1, sizeof(cc_mem_slot) * (size_t)(nslots - i - 1));
            --nslots;
            break;
        }
    if (p) ++hits;
    else ++misses;
    pthread_mutex_unlock(&mu);
    return p;
}

int cc_mem_keep(void *p, size_t size)
{
    int ok = 0;
    if (!p || size < min_block || size > budget) return 0;
    pthread_mutex_lock(&mu);
    mem_evict(size);
    if (nslots == CC_MEM_SLOTS) {   /* (full: the oldest goes) */
        kept -= slots[0].size;
        free(slots[0].p);
        memmove(slots, slots + 1, sizeof(cc_mem_slot) * (size_t)(nslots - 1));
        --nslots;
    }
    if (kept + size <= budget) {
        slots[nslots].p = p;
        slots[nslots].size = size;
        ++nslots;
        kept += size;
        ok = 1;
    }
    pthread_mutex_unlock(&mu);
    return ok;
}

void cc_mem_stats(size_t *kept_bytes, int *blocks, unsigned long long *n_hits,
                  unsigned long long *n_misses)
{
    pthread_mutex_lock(&mu);
    *kept_bytes = kept;
    *blocks = nslots;
    *n_hits = hits;
    *n_misses = misses;
    pthread_mutex_unlock(&mu);
}

/* Fault in the whole pages of [p, p + size) for writing, in one call (Linux
 * 5.14 and later; elsewhere nothing).  A fresh large output is otherwise
 * faulted in page by page by the threads of the kernel that first writes it,
 * which on a 2-vCPU virtual machine sometimes took 10-20x as long as one
 * thread's faults (two threads contending for the same page tables).
 * Returns 1 if the pages were faulted in, 0 if not (nothing to do, or
 * refused: the first writes fault them in as before). */
int cc_mem_populate(void *p, size_t size)
{
#if defined(__linux__)
    static long page;
    uintptr_t a, e;
    if (!p || !size) return 0;
    if (!page) page = sysconf(_SC_PAGESIZE) > 0 ? sysconf(_SC_PAGESIZE) : 4096;
    a = ((uintptr_t)p + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    e = ((uintptr_t)p + size) & ~((uintptr_t)page - 1);
    return e > a && madvise((void *)a, (size_t)(e - a), MADV_POPULATE_WRITE) == 0;
#else
    (void)p, (void)size;
    return 0;
#endif
}
