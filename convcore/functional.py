"""convcore's functional API: NumPy (or CuPy) arrays in, arrays out.

Names and parameters mirror ``torch.nn.functional``.  All argument validation
and output allocation happens here; the backends only compute.
"""
from convcore._config import (get_memory_cache, get_num_threads, get_workspace_limit,
                              set_memory_cache, set_num_threads, set_workspace_limit)
from convcore._ops.conv import col2im, conv2d, conv2d_backward, im2col
from convcore._ops.conv_transpose import conv_transpose2d, conv_transpose2d_backward
from convcore._ops.pool import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward, avg_pool2d,
                               avg_pool2d_backward, max_pool2d, max_pool2d_backward)
from convcore._ops.layers import (batch_norm, batch_norm_backward, cross_entropy,
                                 cross_entropy_backward, dropout, dropout_backward, linear,
                                 linear_backward, local_response_norm,
                                 local_response_norm_backward, log_softmax,
                                 log_softmax_backward, relu, relu_backward, softmax,
                                 softmax_backward)
from convcore._ops.activations import (dropout2d, dropout2d_backward, leaky_relu,
                                      leaky_relu_backward, sigmoid, sigmoid_backward, tanh,
                                      tanh_backward)
from convcore._ops.upsample import interpolate, interpolate_backward

__all__ = [
    "conv2d", "conv2d_backward", "im2col", "col2im",
    "conv_transpose2d", "conv_transpose2d_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "linear", "linear_backward", "relu", "relu_backward", "batch_norm", "batch_norm_backward",
    "local_response_norm", "local_response_norm_backward", "dropout", "dropout_backward",
    "softmax", "softmax_backward", "log_softmax", "log_softmax_backward",
    "cross_entropy", "cross_entropy_backward",
    "tanh", "tanh_backward", "sigmoid", "sigmoid_backward", "leaky_relu", "leaky_relu_backward",
    "dropout2d", "dropout2d_backward", "interpolate", "interpolate_backward",
    "set_num_threads", "get_num_threads", "set_workspace_limit", "get_workspace_limit",
    "set_memory_cache", "get_memory_cache",
]


def __dir__():   # dir() shows the public names only
    return sorted(__all__)
