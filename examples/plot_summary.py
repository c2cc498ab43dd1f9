"""
Summary tables: where the parameters and the arithmetic are
===========================================================

:func:`convcore.summary` walks a model with shapes only (nothing runs) and lists
per layer the output shape, the activations and their memory, the parameters and
the multiply-accumulates. For VGG-16 it reproduces the course notes' table:
almost all the memory is in the early convolutions, almost all the parameters
in the fully connected layers.
"""
import matplotlib.pyplot as plt
import numpy as np

import convcore as cc

# %%
# LeNet-5 on a 1×32×32 image
# --------------------------
print(cc.summary(cc.models.lenet5(), (1, 32, 32)))

# %%
# VGG-16 on a 3×224×224 image
# ---------------------------
s = cc.summary(cc.models.vgg16(), (3, 224, 224))
print(s)

# %%
# The same numbers per layer, as bars: activations against parameters, for the
# layers that have parameters (convolutions and fully connected layers).
rows = [r for r in s.rows if r["params"]]
names = [r["name"] for r in rows]
pos = np.arange(len(rows))
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 5.5), sharey=True, layout="constrained")
a.barh(pos, [r["activations"] / 1e6 for r in rows], color="tab:blue")
a.set_xlabel("activations (millions)")
a.set_title("memory: the early convolutions", fontsize=11)
b.barh(pos, [r["params"] / 1e6 for r in rows], color="tab:orange")
b.set_xlabel("parameters (millions)")
b.set_title("parameters: the fully connected layers", fontsize=11)
a.set_yticks(pos, names)
a.invert_yaxis()
plt.show()

# %%
# Parameter counts of the notes' configuration table
# --------------------------------------------------
for cfg in ("A", "A-LRN", "B", "C", "D", "E"):
    total = cc.summary(cc.models.vgg(cfg), (3, 224, 224)).total_params
    print(f"VGG {cfg:6s} {total / 1e6:6.1f} M parameters")
