"""Principal component analysis with ``torch.linalg``: a picture of a feature space in two dimensions.

Centre the vectors and take the singular value decomposition ``X - mean = U S V^T``: the rows of
``V^T`` are the directions along which the vectors vary most, ordered by variance (``S**2 / (n - 1)``);
projecting onto the first two gives the best 2-D picture in the least-squares sense. A component's sign
is arbitrary: each is flipped so that its largest entry is positive, so the same data gives the same picture."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PCA:
    """A fitted projection: the mean, the directions (``k x d``) and the variance they explain."""

    mean: torch.Tensor  # d
    components: torch.Tensor  # k x d, orthonormal rows
    explained_variance: torch.Tensor  # k, variance along each component
    explained_variance_ratio: torch.Tensor  # k, its share of the total variance

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Coordinates ``n x k`` of vectors ``x`` (the fitted ones, or new ones such as other photos)."""
        return (x.to(self.mean.dtype) - self.mean) @ self.components.T


def pca(x: torch.Tensor, k: int = 2) -> PCA:
    """Fit a ``k``-component PCA to the rows of ``x`` (``n x d``, ``n >= 2``); use ``.transform`` to project. Taught in lesson 6."""
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need an n x d matrix with n >= 2, got shape {tuple(x.shape)}")
    if not 1 <= k <= min(x.shape):
        raise ValueError(f"k must be between 1 and {min(x.shape)} for shape {tuple(x.shape)}, got {k}")
    x = x.detach().to(torch.float64)  # double precision: the variances of 1280 features add up
    mean = x.mean(0)
    _, s, vt = torch.linalg.svd(x - mean, full_matrices=False)
    components = vt[:k]
    signs = torch.sign(components.gather(1, components.abs().argmax(1, keepdim=True)))
    components = components * signs
    variance = s**2 / (len(x) - 1)
    return PCA(mean=mean, components=components, explained_variance=variance[:k],
               explained_variance_ratio=variance[:k] / variance.sum())
