"""convcore's functional API: NumPy (or CuPy) arrays in, arrays out.

Names and parameters mirror ``torch.nn.functional``.  All argument validation
and output allocation happens here; the backends only compute.
"""
from convcore._config import (get_num_threads, get_workspace_limit, set_num_threads,
                              set_workspace_limit)
from convcore._ops.conv import col2im, conv2d, conv2d_backward, im2col
from convcore._ops.pool import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward, avg_pool2d,
                               avg_pool2d_backward, max_pool2d, max_pool2d_backward)

__all__ = [
    "conv2d", "conv2d_backward", "im2col", "col2im",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "set_num_threads", "get_num_threads", "set_workspace_limit", "get_workspace_limit",
]
