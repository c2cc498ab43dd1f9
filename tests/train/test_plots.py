"""The PNGs of a training run are readable: integer epoch ticks, nothing cut at
the edge of the image, no text smaller than 9 pt (checked on the figures that
``convcore._plots`` builds, after drawing them)."""
import os

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from convcore import _plots  # noqa: E402


def _history(n):
    return [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 1.1 / e,
             "train_acc": 0.5 + 0.04 * e, "test_acc": 0.48 + 0.04 * e}
            for e in range(1, n + 1)]


def _texts(fig):
    """Every visible, non-empty text of a drawn figure."""
    from matplotlib.text import Text
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def _assert_inside(fig):
    """The drawn figure's tight box (titles, labels, tick labels, colour bars)
    lies within the image."""
    fig.canvas.draw()
    bb = fig.get_tightbbox(fig.canvas.get_renderer())        # inches
    w, h = fig.get_size_inches()
    tol = 0.01
    assert bb.x0 >= -tol and bb.y0 >= -tol and bb.x1 <= w + tol and bb.y1 <= h + tol, (
        f"drawn content {bb.bounds} runs past the {w:g}x{h:g} in figure")


def _assert_font(fig, smallest):
    for t in _texts(fig):
        assert t.get_fontsize() >= smallest, (t.get_text(), t.get_fontsize())


@pytest.mark.parametrize("epochs", [2, 3, 10])
def test_curves_epoch_ticks_are_integers(epochs):
    fig = _plots.curves_figure(_history(epochs))
    fig.canvas.draw()
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        ticks = [v for v in ax.get_xticks() if lo <= v <= hi]
        assert ticks and all(float(v).is_integer() for v in ticks), ticks
    _assert_inside(fig)
    _assert_font(fig, 9)


def test_confusion_nothing_cut_and_readable():
    rng = np.random.default_rng(0)
    conf = rng.integers(0, 1000, size=(10, 10))
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]
    fig = _plots.confusion_figure(conf, classes)
    _assert_inside(fig)
    _assert_font(fig, 9)


@pytest.mark.parametrize("K,C", [(6, 1), (16, 3), (2, 1)])
def test_filters_nothing_cut(K, C):
    w = np.random.default_rng(1).standard_normal((K, C, 5, 5)).astype(np.float32)
    fig = _plots.filters_figure(w)
    _assert_inside(fig)
    _assert_font(fig, 9)


@pytest.mark.parametrize("K,C", [(6, 1), (3, 3), (20, 1)])
def test_feature_maps_title_not_cut(K, C):
    # The title was clipped at both edges of a 3-panel-wide figure before.
    rng = np.random.default_rng(2)
    w = rng.standard_normal((K, C, 5, 5)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    img = rng.random((C, 28, 28)).astype(np.float32)
    fig = _plots.feature_maps_figure(img, w, b)
    _assert_inside(fig)
    _assert_font(fig, 9)
    assert any("feature maps" in t.get_text() for t in _texts(fig))


def test_pngs_written_at_100_dpi(tmp_path):
    import matplotlib.image as mpimg
    path = os.path.join(tmp_path, "curves.png")
    _plots.plot_curves(_history(3), path)
    img = mpimg.imread(path)
    assert img.shape[:2] == (400, 1000)          # figsize (10, 4) at 100 dpi
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp.png")]
