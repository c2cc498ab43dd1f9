"""Sharding: the seeded sample order of an epoch and each rank's contiguous
share of a global batch.

Nothing here imports MPI or the distributed runtime: when ``rank`` or
``world_size`` is not given, the runtime is asked for it then (without
:func:`convcore.distributed.init` it answers rank 0 of 1).
"""
from __future__ import annotations

import numpy as np

from convcore._validate import as_int

__all__ = ["epoch_permutation", "shard_bounds", "shard_indices", "ShardedBatches"]

_MAX_COUNT = 2**63 - 1   # sample counts and epochs: no bound but int64's


def epoch_permutation(n, seed, epoch):
    """The sample order of one epoch: a permutation of ``range(n)`` that
    depends only on ``(seed, epoch)``, the same on every rank and in a
    single-process run.

    Examples
    --------
    >>> from convcore.data import shard
    >>> p = shard.epoch_permutation(5, seed=0, epoch=0)
    >>> sorted(p.tolist())
    [0, 1, 2, 3, 4]
    >>> bool((p == shard.epoch_permutation(5, seed=0, epoch=0)).all())
    True
    """
    n = as_int(n, "n", 0, _MAX_COUNT)
    rng = np.random.default_rng([int(seed), int(epoch)])
    return rng.permutation(n)


def shard_bounds(n, rank=None, world_size=None):
    """``(start, stop)`` of this rank's contiguous share of ``n`` items.

    The first ``n % world_size`` ranks get one item more; shares are disjoint
    and in rank order cover ``range(n)``.

    Examples
    --------
    >>> from convcore.data import shard
    >>> [shard.shard_bounds(10, r, 4) for r in range(4)]
    [(0, 3), (3, 6), (6, 8), (8, 10)]
    """
    n = as_int(n, "n", 0, _MAX_COUNT)
    r, w = _rank_world(rank, world_size)
    q, m = divmod(n, w)
    start = r * q + min(r, m)
    return start, start + q + (1 if r < m else 0)


def shard_indices(indices, rank=None, world_size=None):
    """This rank's contiguous share of a global batch of ``indices``.

    Examples
    --------
    >>> import numpy as np
    >>> from convcore.data import shard
    >>> shard.shard_indices(np.arange(6), rank=1, world_size=2)
    array([3, 4, 5])
    """
    a, b = shard_bounds(len(indices), rank, world_size)
    return indices[a:b]


def _rank_world(rank, world_size):
    """``(rank, world_size)`` checked; the runtime's when not given."""
    if rank is None or world_size is None:
        from convcore.distributed import runtime   # only now: no MPI at import
        rank = runtime.rank() if rank is None else rank
        world_size = runtime.world_size() if world_size is None else world_size
    r = as_int(rank, "rank", 0, _MAX_COUNT)
    w = as_int(world_size, "world_size", 1, _MAX_COUNT)
    if r >= w:
        raise ValueError(f"rank must be < world_size ({w}), got {r}")
    return r, w


class ShardedBatches:
    """Seeded batches of sample indices, each global batch split across ranks.

    Epoch ``e`` visits :func:`epoch_permutation` ``(n, seed, e)`` (or
    ``range(n)`` without shuffling) in global batches of ``batch_size``; this
    rank gets a contiguous, disjoint share of each (see :func:`shard_bounds`).
    Concatenating the shares of ranks ``0 .. W-1`` gives the global batch, so
    the global order is the same as a single-process run with the same seed,
    for any number of ranks, and every rank yields the same number of
    batches (a share can be empty when a batch has fewer samples than ranks).

    Parameters
    ----------
    n : int
        Number of samples.
    batch_size : int
        Global batch size (over all ranks).
    shuffle : bool
        Permute the samples each epoch (seeded), else keep their order.
    seed : int
        Seed of the permutation.
    drop_last : bool
        Drop a last global batch smaller than ``batch_size``.
    rank, world_size : int, optional
        Default: this process's rank and the number of ranks.
    start_batch : int
        Skip the first ``start_batch`` global batches of the epoch set by
        :meth:`set_epoch` (resuming in the middle of an epoch).

    Examples
    --------
    >>> from convcore.data import shard
    >>> b = shard.ShardedBatches(10, batch_size=4, shuffle=False, rank=1, world_size=2)
    >>> [idx.tolist() for idx in b]
    [[2, 3], [6, 7], [9]]
    >>> len(b)
    3
    """

    def __init__(self, n, batch_size, *, shuffle=True, seed=0, drop_last=False,
                 rank=None, world_size=None, start_batch=0):
        self.n = as_int(n, "n", 0, _MAX_COUNT)
        self.batch_size = as_int(batch_size, "batch_size", 1, _MAX_COUNT)
        self.rank, self.world_size = _rank_world(rank, world_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.start_batch = as_int(start_batch, "start_batch", 0, _MAX_COUNT)

    def set_epoch(self, epoch, start_batch=0):
        """Choose the epoch whose order the next iteration follows."""
        self.epoch = as_int(epoch, "epoch", 0, _MAX_COUNT)
        self.start_batch = as_int(start_batch, "start_batch", 0, _MAX_COUNT)

    def __len__(self):
        if self.drop_last:
            return self.n // self.batch_size
        return -(-self.n // self.batch_size)

    def global_batches(self):
        """The global batches of the current epoch (index arrays), as one
        process would see them."""
        order = (epoch_permutation(self.n, self.seed, self.epoch) if self.shuffle
                 else np.arange(self.n))
        for i in range(self.start_batch, len(self)):
            yield order[i * self.batch_size:(i + 1) * self.batch_size]

    def __iter__(self):
        for batch in self.global_batches():
            yield shard_indices(batch, self.rank, self.world_size)
