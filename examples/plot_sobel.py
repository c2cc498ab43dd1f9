"""
Sobel edges on a photograph
===========================

The course notes' worked example lays the vertical-edge Sobel kernel on a 3×3
patch of pixel values; here is that number, then the same kernel and its
transpose run over a real photograph with :func:`convcore.conv2d`: one input
channel, two kernels, two feature maps.

The photograph (Grace Hopper, 600×512 pixels) is one matplotlib ships with its
sample data, so the example needs no download.
"""
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import cbook

import convcore as cc

# %%
# The notes' patch
# ----------------
# Element-wise product with the kernel, then the sum: that is the value of one
# output pixel, and what ``conv2d`` (a cross-correlation) computes.
SOBEL = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float64)
patch = np.array([[200, 150, 150], [100, 50, 100], [25, 25, 10]], dtype=np.float64)
print("by hand:", (patch * SOBEL).sum())
print("conv2d: ", cc.conv2d(patch[None, None], SOBEL[None, None]).item())

# %%
# A real image
# ------------
# Grey levels in [0, 1], shaped ``(N, C, H, W) = (1, 1, H, W)``; the two kernels
# are stacked as ``(K, C, KH, KW) = (2, 1, 3, 3)``. ``padding=1`` keeps the size.
with cbook.get_sample_data("grace_hopper.jpg") as fh:
    rgb = plt.imread(fh).astype(np.float64) / 255.0
grey = rgb @ np.array([0.299, 0.587, 0.114])            # (H, W)
bank = np.stack([SOBEL, SOBEL.T])[:, None]               # (2, 1, 3, 3)
maps = cc.conv2d(grey[None, None], bank, padding=1)[0]   # (2, H, W)
magnitude = np.hypot(maps[0], maps[1])
print("image", grey.shape, "-> feature maps", maps.shape)

# %%
# The vertical-edge map responds to left-right changes of brightness, the
# horizontal-edge map to up-down ones; the gradient magnitude combines them.
fig, axes = plt.subplots(1, 4, figsize=(12, 3.9), layout="constrained")
panels = [(grey, "input (grey levels)", "gray"),
          (maps[0], "Sobel: vertical edges", "RdBu_r"),
          (maps[1], "Sobel transposed: horizontal edges", "RdBu_r"),
          (magnitude, "gradient magnitude", "magma")]
for ax, (img, title, cmap) in zip(axes, panels):
    if cmap == "RdBu_r":                      # signed: white is zero
        v = np.percentile(np.abs(img), 99)    # a few strong edges would wash out the rest
        ax.imshow(img, cmap=cmap, vmin=-v, vmax=v)
    elif cmap == "magma":
        ax.imshow(img, cmap=cmap, vmin=0, vmax=np.percentile(img, 99))
    else:
        ax.imshow(img, cmap=cmap)
    ax.set_title(title, fontsize=11)
    ax.set_axis_off()
plt.show()
