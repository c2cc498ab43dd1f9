"""Tests of the convolution family: conv2d, conv_transpose2d, depthwise, the
strategies, Winograd, im2col/col2im.
"""
