"""Data-parallel training across processes over MPI (through ``mpi4py``).

Every process (a *rank*) holds a full copy of the model, reads its own shard
of each global batch, runs forward and backward on it, and the ranks then
average their gradients with one ``Allreduce`` per bucket of parameters, so
that every rank applies the same update and the weights stay identical.  For
a model without BatchNorm, ``W`` ranks with global batch ``B`` compute the same
weights, to float rounding, as one process with batch ``B`` and the same data
order.

The functions work in a user's own training loop::

    import convcore.distributed as dist
    dist.init()                                  # under mpiexec
    dist.broadcast_parameters(model)             # same start on every rank
    batches = dist.ShardedBatches(len(x), batch_size=64, seed=0)
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        for idx in batches:                      # this rank's share of a batch
            model.zero_grad()
            loss_grad = ...                      # forward/backward on x[idx]
            dist.allreduce_gradients(model, local_batch=len(idx))
            optimizer.step()

launched as ``mpiexec -n 2 python my_loop.py``.  Without :func:`init` (or
under ``mpiexec -n 1``) everything here works as a single process: rank 0,
world size 1, reductions are identities.

A rank that dies makes the MPI launcher end the whole job.  A rank that
stops answering (hung, or finished early) would leave the others waiting in
a collective forever; :func:`init` starts a watchdog that aborts the job, with
a message saying so, when one collective waits longer than ``timeout``
seconds.  An uncaught exception on any rank aborts the whole job too.

The package's modules: :mod:`~convcore.distributed.runtime` (launch, ranks,
abort, watchdog), :mod:`~convcore.distributed.collectives` (gradients,
reductions, broadcasts) and :mod:`~convcore.distributed.batchnorm` (batch
statistics over all ranks); sharding lives in :mod:`convcore.data.shard` and
the synchronised layer in :class:`convcore.nn.SyncBatchNorm2d`.  This
namespace re-exports them all.
"""
from convcore.distributed.runtime import (INSTALL_HINT, LAUNCH_HINT, DistributedError,
                                          abort, barrier, communication_stats, init,
                                          is_available, is_initialized, is_main_process,
                                          launched_by_mpi, local_rank, local_world_size,
                                          rank, threads_per_rank, world_size)
from convcore.distributed.runtime import (_LAUNCHER_VARS, _comm,  # noqa: F401 (tests)
                                          _launcher_world_size)
from convcore.distributed.collectives import (allreduce_array, allreduce_gradients,
                                              average_buffers, broadcast_arrays,
                                              broadcast_object, broadcast_parameters,
                                              reduce_metrics)
from convcore.distributed.batchnorm import sync_batch_norm_backward, sync_batch_norm_forward
from convcore.data.shard import ShardedBatches, epoch_permutation, shard_bounds, shard_indices
from convcore.nn.sync_batchnorm import convert_sync_batchnorm

__all__ = [
    "init", "is_initialized", "is_available", "rank", "world_size",
    "local_rank", "local_world_size", "is_main_process", "launched_by_mpi",
    "barrier", "abort", "communication_stats", "allreduce_gradients",
    "broadcast_parameters", "broadcast_object", "broadcast_arrays", "allreduce_array",
    "reduce_metrics", "average_buffers", "threads_per_rank",
    "epoch_permutation", "shard_bounds", "ShardedBatches", "shard_indices",
    "sync_batch_norm_forward", "sync_batch_norm_backward", "convert_sync_batchnorm",
    "DistributedError", "INSTALL_HINT", "LAUNCH_HINT",
]
