"""AlexNet's colour augmentation ("PCA-based data augmentation" in the notes):
principal components of the RGB pixel values of the training set, and a
random shift along them per image.

Krizhevsky et al. (2012), section 4.1: to each pixel ``[R, G, B]`` of an
image add ``[p1, p2, p3] [a1 l1, a2 l2, a3 l3]^T`` where ``p_i`` and ``l_i``
are the eigenvectors and eigenvalues of the 3x3 covariance of the training
pixels and ``a_i ~ N(0, 0.1)`` is drawn once per image each time it is used.
The shift is the same for every pixel of an image: it changes the intensity
and colour of the illumination, not the object.
"""
from __future__ import annotations

import numpy as np

__all__ = ["PCALighting", "pca_lighting_basis", "training_augmentation"]


def pca_lighting_basis(images, max_pixels=1_000_000):
    """Eigenvalues (descending) and eigenvectors (columns) of the covariance
    of the colour of every pixel of ``images``, in [0, 1] units for uint8
    images (``x / 255``), in the images' own units otherwise.

    Parameters
    ----------
    images : ndarray, shape (N, C, H, W)
        ``C >= 2`` colour channels (3 for RGB).
    max_pixels : int
        Use at most about this many pixels, an evenly spaced subset (the
        estimate of a 3x3 covariance needs far fewer than CIFAR-10's 51M).

    Returns
    -------
    eigval : ndarray (C,), eigvec : ndarray (C, C)
        ``cov = eigvec @ diag(eigval) @ eigvec.T``.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] < 2:
        raise ValueError(f"PCA lighting needs colour images (N, C, H, W) with C >= 2 "
                         f"channels, got shape {images.shape}")
    C = images.shape[1]
    pix = np.moveaxis(images, 1, -1).reshape(-1, C)
    step = max(1, pix.shape[0] // int(max_pixels))
    pix = pix[::step].astype(np.float64)
    if images.dtype == np.uint8:
        pix /= 255.0
    cov = np.cov(pix, rowvar=False)
    val, vec = np.linalg.eigh(cov)
    order = np.argsort(val)[::-1]
    return np.clip(val[order], 0.0, None), vec[:, order]


class PCALighting:
    """The AlexNet colour shift: ``x + eigvec @ (alpha * eigval)`` per image,
    ``alpha ~ N(0, alpha_std)`` drawn per image.

    Parameters
    ----------
    eigval : array (C,)
    eigvec : array (C, C), eigenvectors as columns
    alpha_std : float
        Standard deviation of the random coefficients (0.1 in the paper).

    Examples
    --------
    >>> import numpy as np
    >>> from convcore.data import PCALighting
    >>> light = PCALighting([0.2, 0.02, 0.002], np.eye(3))
    >>> x = np.zeros((2, 3, 4, 4))
    >>> y = light(x, np.random.default_rng(0))
    >>> y.shape, bool((y[0, 0] == y[0, 0, 0, 0]).all())   # one shift per image and channel
    ((2, 3, 4, 4), True)
    """

    def __init__(self, eigval, eigvec, alpha_std=0.1):
        self.eigval = np.asarray(eigval, np.float64).reshape(-1)
        C = self.eigval.shape[0]
        self.eigvec = np.asarray(eigvec, np.float64)
        if self.eigvec.shape != (C, C):
            raise ValueError(f"eigvec must have shape ({C}, {C}) to match {C} eigenvalues, "
                             f"got {self.eigvec.shape}")
        self.alpha_std = float(alpha_std)
        if not self.alpha_std >= 0:
            raise ValueError(f"alpha_std must be >= 0, got {alpha_std!r}")

    @classmethod
    def fit(cls, images, alpha_std=0.1, max_pixels=1_000_000):
        """The lighting of a training set (see :func:`pca_lighting_basis`)."""
        val, vec = pca_lighting_basis(images, max_pixels)
        return cls(val, vec, alpha_std)

    def shifts(self, alpha):
        """Per-image colour shifts ``(n, C)`` for coefficients ``alpha (n, C)``."""
        return (np.asarray(alpha, np.float64) * self.eigval) @ self.eigvec.T

    def draw(self, n, rng):
        """``n`` random shifts ``(n, C)`` from generator ``rng``."""
        return self.shifts(rng.normal(0.0, self.alpha_std, (int(n), self.eigval.shape[0])))

    def __call__(self, x, rng):
        """``x (N, C, H, W)`` (float, the basis' units) plus a random shift per image."""
        if x.ndim != 4 or x.shape[1] != self.eigval.shape[0]:
            raise ValueError(f"expected (N, {self.eigval.shape[0]}, H, W) images, got shape "
                             f"{x.shape}")
        d = self.draw(x.shape[0], rng).astype(x.dtype, copy=False)
        return x + d[:, :, None, None]

    def __repr__(self):
        return (f"PCALighting(eigval={np.array2string(self.eigval, precision=4)}, "
                f"alpha_std={self.alpha_std})")


def training_augmentation(augment, images, dataset=""):
    """``(crop_and_flip, lighting)`` for a training run's ``augment`` setting:
    ``False``/``None`` nothing, ``True``/``'crop'`` random crop and flip,
    ``'pca'`` crop and flip plus :class:`PCALighting` fitted on ``images``
    (colour datasets only)."""
    if augment is None or augment is False:
        return False, None
    if augment is True or augment == "crop":
        return True, None
    if augment == "pca":
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"--augment pca needs colour (3-channel) images; "
                             f"{dataset or 'this dataset'} has {images.shape[1]} channel(s)")
        return True, PCALighting.fit(images)
    raise ValueError(f"augment must be True, False, 'crop' or 'pca', got {augment!r}")
