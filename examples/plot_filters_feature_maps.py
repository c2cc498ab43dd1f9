"""
Filters and feature maps
========================

A convolution layer is a bank of filters; each filter slides over the input and
leaves one feature map. This example builds a small bank by hand (edge, blur,
sharpen and blob detectors), runs it over a photograph as one convolution layer
— :func:`convcore.conv2d`, then ReLU, then :func:`convcore.max_pool2d` — and shows
every filter next to what it makes of the image. The trained first-layer
filters of LeNet-5 are in the example *Training LeNet-5 on Fashion-MNIST*.
"""
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import cbook

import convcore as cc

# %%
# The filter bank: ``(K, C, KH, KW) = (6, 1, 5, 5)``
# --------------------------------------------------
r = np.arange(-2, 3)
yy, xx = np.meshgrid(r, r, indexing="ij")
gauss = np.exp(-(xx ** 2 + yy ** 2) / 2.0)
gauss /= gauss.sum()
log = (xx ** 2 + yy ** 2 - 2.0) * np.exp(-(xx ** 2 + yy ** 2) / 2.0)
log -= log.mean()                                  # Laplacian of Gaussian: blobs
identity = np.zeros((5, 5))
identity[2, 2] = 1.0
filters = {
    "vertical edges": -xx * gauss,
    "horizontal edges": -yy * gauss,
    "diagonal edges": -(xx + yy) * gauss,
    "blur": gauss,
    "sharpen": 2 * identity - gauss,
    "blobs": -log,
}
names = list(filters)
weight = np.stack([filters[n] for n in names])[:, None]    # (6, 1, 5, 5)
print("weight", weight.shape)

# %%
# One layer: convolution, ReLU, 2×2 max pooling
# ---------------------------------------------
with cbook.get_sample_data("grace_hopper.jpg") as fh:
    rgb = plt.imread(fh).astype(np.float64) / 255.0
x = (rgb @ np.array([0.299, 0.587, 0.114]))[None, None]   # (1, 1, 600, 512)
y = cc.conv2d(x, weight, padding=2)                         # (1, 6, 600, 512)
a = np.maximum(y, 0)                                        # ReLU
p = cc.max_pool2d(a, 2)                                     # (1, 6, 300, 256)
print("input", x.shape, "-> conv", y.shape, "-> pool", p.shape)

# %%
# Each filter (top) and its feature map after ReLU and pooling (bottom). Edge
# filters keep only the edges of one orientation and sign; the blur keeps the
# picture; the blob detector lights up small dark spots such as the eyes.
fig, axes = plt.subplots(2, len(names), figsize=(13, 5.2), layout="constrained",
                         gridspec_kw={"height_ratios": [1, 2.2]})
for k, name in enumerate(names):
    f = weight[k, 0]
    v = np.abs(f).max()
    axes[0, k].imshow(f, cmap="RdBu_r", vmin=-v, vmax=v)
    axes[0, k].set_title(name, fontsize=11)
    axes[1, k].imshow(p[0, k], cmap="viridis")
    axes[1, k].set_title(f"map {k}", fontsize=10)
for ax in axes.ravel():
    ax.set_axis_off()
plt.show()

# %%
# The same layer as a module
# --------------------------
# :class:`convcore.nn.Conv2d` holds the bank as its weight; loading the filters
# into it gives the same maps as the functional call (to float32 rounding: the
# module keeps float32 parameters, the call above ran in float64).
conv = cc.nn.Conv2d(1, len(names), 5, padding=2, bias=False)
conv.weight.data[...] = weight.astype(conv.weight.data.dtype)
same = conv(x.astype(conv.weight.data.dtype))
print("module output", same.shape, "max |difference|",
      float(np.abs(same - y).max()))
