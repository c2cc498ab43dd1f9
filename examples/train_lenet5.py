"""
Training LeNet-5 on Fashion-MNIST
=================================

What ``convcore train`` does with no arguments, written out in Python: LeNet-5
on Fashion-MNIST (from Debian's ``dataset-fashion-mnist`` package) for 10
epochs, SGD with momentum 0.9 and a cosine learning-rate schedule, seed 0. Each
epoch writes a checkpoint; the run ends with ``metrics.json`` and four PNG plots
in the output directory.

The documentation build does not run this script (it trains on 60,000 images);
the output and figures below were recorded from a run of it::

    python examples/train_lenet5.py runs/lenet5
"""
import sys

# sphinx_gallery_thumbnail_path = "_recorded/train_lenet5/curves.png"

from convcore.train import TrainConfig, fit

out = sys.argv[1] if len(sys.argv) > 1 else "runs/lenet5"
cfg = TrainConfig(model="lenet5", dataset="fashion-mnist", epochs=10, seed=0,
                  threads=1, out=out)
result = fit(cfg, progress=False)
best = max(result["history"], key=lambda h: h["test_acc"])
print(f"best test accuracy {100 * best['test_acc']:.2f} % (epoch {best['epoch']})")

# %%
# Recorded output
# ---------------
#
# .. literalinclude:: /_recorded/train_lenet5/output.txt
#    :language: none
#    :class: cc-wrap
#
# (Images per second and seconds per epoch were measured with one thread on a
# shared 2-core machine, and vary from run to run.)
#
# Loss and accuracy per epoch (``curves.png``):
#
# .. image:: /_recorded/train_lenet5/curves.png
#    :alt: training and test loss and accuracy per epoch
#
# The test set's confusion matrix (``confusion.png``): shirts, T-shirts,
# pullovers and coats are the classes the network mixes up.
#
# .. image:: /_recorded/train_lenet5/confusion.png
#    :alt: confusion matrix of the test set
#
# The six 5×5 filters of the first convolution after training
# (``filters.png``), and what they make of the first test image
# (``feature_maps.png``):
#
# .. image:: /_recorded/train_lenet5/filters.png
#    :alt: first-layer filters
#
# .. image:: /_recorded/train_lenet5/feature_maps.png
#    :alt: first-layer feature maps of one test image
