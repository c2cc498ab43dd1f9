"""Pruning ("several ways to learn architectures" in the notes: start from an
over-parameterised network and remove what it does not need).

* :func:`magnitude_prune` -- unstructured: the weights of smallest magnitude
  become zero, per layer or over the whole network at once (global); a
  :class:`Masks` object keeps them zero through fine-tuning.
* :func:`prune_channels` -- structured: whole filters of a convolution go,
  with the matching batch-norm channels and the matching input channels of
  the next convolution (or columns of the next fully connected layer), so
  the network really gets smaller: fewer parameters and fewer MACs.
* :func:`fine_tune` -- a few epochs of SGD keeping the masks.

``convcore prune RUN --amount 0.9 --epochs 2`` does it to a trained run and
writes a new run with a before/after summary.
"""
from convcore.prune.magnitude import Masks, count_nonzero, magnitude_prune, sparsity
from convcore.prune.channels import prune_channels, resize_to_state
from convcore.prune.run import add_cli, fine_tune, format_prune_report, prune_run  # noqa: F401

__all__ = ["Masks", "magnitude_prune", "prune_channels", "resize_to_state", "sparsity",
           "count_nonzero", "fine_tune", "prune_run", "format_prune_report"]
