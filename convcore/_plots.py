"""PNG plots of a training run (matplotlib, Agg canvas; no global backend change)."""
from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PLOTS = ("curves.png", "confusion.png", "filters.png", "feature_maps.png")


def _save(fig, path):
    FigureCanvasAgg(fig)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def plot_curves(history, path):
    ep = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.5))
    a, b = fig.subplots(1, 2)
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(ep, [h["test_loss"] for h in history], "o-", label="test")
    a.set_xlabel("epoch"); a.set_ylabel("loss"); a.legend(); a.set_title("loss")
    b.plot(ep, [100 * h["train_acc"] for h in history], "o-", label="train")
    b.plot(ep, [100 * h["test_acc"] for h in history], "o-", label="test")
    b.set_xlabel("epoch"); b.set_ylabel("accuracy (%)"); b.legend(); b.set_title("accuracy")
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(conf, classes, path):
    conf = np.asarray(conf)
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    norm = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    n = conf.shape[0]
    ax.set_xticks(range(n)); ax.set_yticks(range(n))
    ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(classes, fontsize=8)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(conf[i, j]), ha="center", va="center", fontsize=6,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted"); ax.set_ylabel("true"); ax.set_title("confusion matrix (test)")
    fig.tight_layout()
    _save(fig, path)


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


def plot_filters(weight, path):
    K, C = weight.shape[:2]
    rows, cols = _grid(K)
    fig = Figure(figsize=(1.2 * cols, 1.2 * rows + 0.4))
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
    fig.suptitle(f"first-layer filters {tuple(weight.shape)}")
    _save(fig, path)


def plot_feature_maps(image, weight, bias, path, n_max=16):
    from convcore import conv2d
    x = np.ascontiguousarray(image[None], dtype=weight.dtype)
    KH, KW = weight.shape[2:]
    y = conv2d(x, weight, bias, padding=(KH // 2, KW // 2))[0]
    y = np.maximum(y, 0)
    n = min(n_max, y.shape[0])
    rows, cols = _grid(n + 1)
    fig = Figure(figsize=(1.5 * cols, 1.5 * rows + 0.4))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    img = image[0] if image.shape[0] == 1 else np.transpose(
        (image - image.min()) / max(float(image.max() - image.min()), 1e-12), (1, 2, 0))
    axes[0].imshow(img, cmap="gray"); axes[0].set_title("input", fontsize=8)
    for k in range(n):
        axes[k + 1].imshow(y[k], cmap="viridis")
        axes[k + 1].set_title(f"map {k}", fontsize=8)
    fig.suptitle("first-layer feature maps (after ReLU) of one test image")
    _save(fig, path)


def write_all(out, model, history, conf, classes, test_image):
    plot_curves(history, os.path.join(out, "curves.png"))
    if conf is not None:
        plot_confusion(conf, classes, os.path.join(out, "confusion.png"))
    w, b = first_conv(model)
    if w is not None:
        plot_filters(w, os.path.join(out, "filters.png"))
        plot_feature_maps(np.asarray(test_image), w, b, os.path.join(out, "feature_maps.png"))
