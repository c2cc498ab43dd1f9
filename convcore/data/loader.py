"""A seeded batch iterator: shuffling, normalisation, CIFAR augmentation."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from convcore.data.shard import shard_bounds

__all__ = ["BatchIterator", "channel_stats"]


def channel_stats(images: np.ndarray):
    """Per-channel mean and standard deviation of uint8 images scaled to [0, 1]."""
    x = images.reshape(images.shape[0], images.shape[1], -1)
    mean = np.empty(images.shape[1])
    std = np.empty(images.shape[1])
    for c in range(images.shape[1]):
        v = x[:, c].astype(np.float64) / 255.0
        mean[c] = v.mean()
        std[c] = v.std()
    std[std == 0] = 1.0
    return mean, std


class BatchIterator:
    """Iterate over (images, labels) in batches, reproducibly.

    Parameters
    ----------
    images : ndarray, uint8 or float, shape (N, C, H, W)
    labels : ndarray, int, shape (N,)
    batch_size : int
    shuffle : bool
        Shuffle once per epoch; the order of epoch `e` depends only on
        ``(seed, e)``, so a resumed run sees the same batches.
    seed : int
    mean, std : sequence of float, per channel, optional
        Images become ``(x / 255 - mean) / std`` (uint8 input) in float32.
    augment : bool
        Random crop with `pad` pixels of zero padding (after normalisation)
        and a random horizontal flip, per image (the usual CIFAR recipe).
    drop_last : bool
        Skip the final short batch.
    lighting : PCALighting, optional
        AlexNet's colour shift along the training set's principal colour
        components, drawn per image and epoch (before the crop), in [0, 1]
        units for uint8 images (added as ``shift / std`` after
        normalisation).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((10, 1, 4, 4), np.uint8); y = np.arange(10)
    >>> it = BatchIterator(x, y, batch_size=4, seed=0)
    >>> [b[0].shape[0] for b in it.epoch(0)]
    [4, 4, 2]
    """

    def __init__(self, images, labels, batch_size: int, shuffle: bool = True, seed: int = 0,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 augment: bool = False, pad: int = 4, drop_last: bool = False,
                 dtype=np.float32, lighting=None):
        if images.ndim != 4:
            raise ValueError(f"images must be 4-D (N, C, H, W), got shape {images.shape}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got "
                             f"{labels.shape}")
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.augment = augment
        self.pad = int(pad)
        self.drop_last = drop_last
        self.lighting = lighting
        self.dtype = np.dtype(dtype)
        C = images.shape[1]
        self.mean = np.zeros(C) if mean is None else np.asarray(mean, np.float64).reshape(C)
        self.std = np.ones(C) if std is None else np.asarray(std, np.float64).reshape(C)
        scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0
        # x_norm = x * a + b per channel
        self._a = (scale / self.std).astype(self.dtype).reshape(1, C, 1, 1)
        self._b = (-self.mean / self.std).astype(self.dtype).reshape(1, C, 1, 1)

    def __len__(self) -> int:
        n = self.labels.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        n = self.labels.shape[0]
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(n)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        out = x.astype(self.dtype)
        out *= self._a
        out += self._b
        return out

    def _augment(self, x: np.ndarray, rng: np.random.Generator, n_drawn=None,
                 first: int = 0) -> np.ndarray:
        # Draws are made for the whole batch (n_drawn images) and rows
        # first .. first + len(x) used, so a shard is augmented as in one process.
        n, _, H, W = x.shape
        p = self.pad
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        m = n if n_drawn is None else n_drawn
        rows = slice(first, first + n)
        dy = rng.integers(0, 2 * p + 1, m)[rows]
        dx = rng.integers(0, 2 * p + 1, m)[rows]
        flip = (rng.random(m) < 0.5)[rows]
        out = np.empty_like(x)
        for i in range(n):
            crop = xp[i, :, dy[i]:dy[i] + H, dx[i]:dx[i] + W]
            out[i] = crop[:, :, ::-1] if flip[i] else crop
        return out

    def epoch(self, epoch: int = 0, shard=None):
        """Yield (x float, y int64) batches of epoch `epoch`.

        ``shard=(rank, world_size)`` yields only that rank's contiguous share
        of each batch (see :func:`convcore.data.shard.shard_bounds`), with the
        same augmentation its images get in a single-process run; every rank
        yields the same number of batches, some possibly empty."""
        order = self.order(epoch)
        rng = np.random.default_rng([self.seed, int(epoch), 1]) if self.augment else None
        bs = self.batch_size
        stop = len(order) - (len(order) % bs if self.drop_last else 0)
        for s in range(0, stop, bs):
            idx = order[s:s + bs]
            a, b = 0, len(idx)
            if shard is not None:
                a, b = shard_bounds(len(idx), *shard)
            x = self.normalize(self.images[idx[a:b]])
            if self.lighting is not None:   # drawn for the whole batch, as the crops
                light = np.random.default_rng([self.seed, int(epoch), 2, s])
                d = self.lighting.draw(len(idx), light)[a:b] / self.std
                x += d.astype(self.dtype)[:, :, None, None]
            if rng is not None:
                x = self._augment(x, rng, len(idx), a)
            yield x, self.labels[idx[a:b]]

    def __iter__(self):
        return self.epoch(0)
