"""The geometry of one convolution or pooling call, by name.

The functional layer validates a call's arguments once and describes the
call by one of these tuples; the backends and the Cython bindings read it
(the bindings by position, in the order of the C core's structs
``cc_conv_geom`` and ``cc_pool_geom``).  Being tuples of ints, they are
hashable by value: the CPU backend keys its plans on them.
"""
from __future__ import annotations

from typing import NamedTuple


class ConvGeom(NamedTuple):
    """A convolution: ``x (N, C, H, W) * weight (K, C / groups, KH, KW) ->
    y (N, K, OH, OW)``, with stride (SH, SW), symmetric zero padding
    (PH, PW) and dilation (DH, DW)."""
    N: int
    C: int
    H: int
    W: int
    K: int
    KH: int
    KW: int
    SH: int
    SW: int
    PH: int
    PW: int
    DH: int
    DW: int
    OH: int
    OW: int
    groups: int

    def with_batch(self, n: int) -> "ConvGeom":
        """The same layer on a batch of ``n`` images."""
        return self._replace(N=n)


class PoolGeom(NamedTuple):
    """A max or average pooling of ``x (N, C, H, W)`` into ``y (N, C, OH,
    OW)`` with windows (KH, KW), stride (SH, SW), padding (PH, PW) and
    dilation (DH, DW).  ``ceil_mode``, ``count_include_pad`` and ``generic``
    (run the C core's generic loops, for tests) are 0 or 1; ``divisor`` is
    the average's divisor override, 0 for none."""
    N: int
    C: int
    H: int
    W: int
    KH: int
    KW: int
    SH: int
    SW: int
    PH: int
    PW: int
    DH: int
    DW: int
    OH: int
    OW: int
    ceil_mode: int
    count_include_pad: int
    divisor: int
    generic: int
