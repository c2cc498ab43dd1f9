"""PNG plots of a training run (matplotlib, Agg canvas; no global backend change).

Every figure uses constrained layout, so titles, tick labels and colour bars are
never cut at the edge of the PNG, and a font size read at 100 dpi without zoom.
The ``*_figure`` functions build a figure and return it; the ``plot_*`` functions
save it. Epoch axes have integer ticks only.
"""
from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PLOTS = ("curves.png", "confusion.png", "filters.png", "feature_maps.png")

# Sizes in points for a PNG shown at 100 dpi, unscaled.
FONT = 11        # axis labels, legends, tick labels
TITLE = 12       # axes titles and figure titles
SMALL = 9        # labels inside small panels (filters, feature maps, cell counts)


def _figure(figsize):
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style(ax, title=None, xlabel=None, ylabel=None):
    if title:
        ax.set_title(title, fontsize=TITLE)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=FONT)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=FONT)
    ax.tick_params(labelsize=FONT - 1)


def _save(fig, path):
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def curves_figure(history):
    """Loss and accuracy per epoch, train and test side by side."""
    ep = [h["epoch"] for h in history]
    fig = _figure((10, 4))
    a, b = fig.subplots(1, 2)
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(ep, [h["test_loss"] for h in history], "o-", label="test")
    b.plot(ep, [100 * h["train_acc"] for h in history], "o-", label="train")
    b.plot(ep, [100 * h["test_acc"] for h in history], "o-", label="test")
    _style(a, "loss", "epoch", "loss")
    _style(b, "accuracy", "epoch", "accuracy (%)")
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=FONT)
    return fig


def plot_curves(history, path):
    _save(curves_figure(history), path)


def confusion_figure(conf, classes):
    """Row-normalised confusion matrix with the counts written in the cells."""
    conf = np.asarray(conf)
    n = conf.shape[0]
    fig = _figure((8, 7))
    ax = fig.subplots()
    norm = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    cb = fig.colorbar(im, ax=ax, shrink=0.85)
    cb.set_label("fraction of the true class", fontsize=FONT)
    cb.ax.tick_params(labelsize=FONT - 1)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    cell = SMALL if n <= 10 else max(5, SMALL - (n - 10) // 4)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(conf[i, j]), ha="center", va="center", fontsize=cell,
                    color="white" if norm[i, j] > 0.5 else "black")
    _style(ax, "confusion matrix (test)", "predicted", "true")
    return fig


def plot_confusion(conf, classes, path):
    _save(confusion_figure(conf, classes), path)


def first_conv(model):
    """(weight, bias) of the first 4-D parameter: the first convolution layer."""
    named = list(model.named_parameters())
    for i, (name, p) in enumerate(named):
        if np.ndim(p.data) == 4:
            bias = None
            prefix = name.rsplit(".", 1)[0] if "." in name else ""
            for n2, p2 in named[i + 1:i + 2]:
                if n2 == (prefix + ".bias" if prefix else "bias"):
                    bias = p2.data
            return _host(p.data), None if bias is None else _host(bias)
    return None, None


def _host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def _grid(n):
    cols = int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / cols)), cols


def filters_figure(weight):
    """One panel per first-layer filter: RGB for 3 input channels, else channel 0
    on a diverging map centred at zero."""
    K, C = weight.shape[:2]
    rows, cols = _grid(K)
    fig = _figure((max(1.4 * cols, 4.5), 1.4 * rows + 0.6))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for k, ax in enumerate(axes):
        ax.axis("off")
        if k >= K:
            continue
        f = weight[k]
        if C == 3:
            img = (f - f.min()) / max(float(f.max() - f.min()), 1e-12)
            ax.imshow(np.transpose(img, (1, 2, 0)), interpolation="nearest")
        else:
            v = float(np.abs(f[0]).max()) or 1.0
            ax.imshow(f[0], cmap="bwr", vmin=-v, vmax=v, interpolation="nearest")
        ax.set_title(f"filter {k}", fontsize=SMALL)
    fig.suptitle(f"first-layer filters {tuple(weight.shape)}", fontsize=TITLE)
    return fig


def plot_filters(weight, path):
    _save(filters_figure(weight), path)


def feature_maps_figure(image, weight, bias, n_max=16):
    """The input image and the first ``n_max`` first-layer feature maps (after ReLU)."""
    from convcore import conv2d
    x = np.ascontiguousarray(image[None], dtype=weight.dtype)
    KH, KW = weight.shape[2:]
    y = conv2d(x, weight, bias, padding=(KH // 2, KW // 2))[0]
    y = np.maximum(y, 0)
    n = min(n_max, y.shape[0])
    rows, cols = _grid(n + 1)
    fig = _figure((max(1.6 * cols, 5.0), 1.6 * rows + 0.6))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    img = image[0] if image.shape[0] == 1 else np.transpose(
        (image - image.min()) / max(float(image.max() - image.min()), 1e-12), (1, 2, 0))
    axes[0].imshow(img, cmap="gray")
    axes[0].set_title("input", fontsize=SMALL)
    for k in range(n):
        axes[k + 1].imshow(y[k], cmap="viridis")
        axes[k + 1].set_title(f"map {k}", fontsize=SMALL)
    fig.suptitle("first-layer feature maps (after ReLU)", fontsize=TITLE)
    return fig


def plot_feature_maps(image, weight, bias, path, n_max=16):
    _save(feature_maps_figure(image, weight, bias, n_max), path)


def write_all(out, model, history, conf, classes, test_image):
    plot_curves(history, os.path.join(out, "curves.png"))
    if conf is not None:
        plot_confusion(conf, classes, os.path.join(out, "confusion.png"))
    w, b = first_conv(model)
    if w is not None:
        plot_filters(w, os.path.join(out, "filters.png"))
        plot_feature_maps(np.asarray(test_image), w, b, os.path.join(out, "feature_maps.png"))
