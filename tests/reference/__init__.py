"""Independent references the tests compare convcore with: plain loops and
formulas written from the definitions, sharing no code with convcore.

``reference.conv``: convolution, im2col/col2im and their gradients;
``reference.pool``: max, average and adaptive average pooling;
``reference.nn``: central differences and the layer formulas (batch norm, LRN).
"""
