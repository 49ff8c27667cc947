"""PCA written with torch.linalg, checked against scikit-learn's PCA (a test-only reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tlcourse.projection import pca



@pytest.fixture(scope="module")
def sklearn_decomposition(require):
    """scikit-learn's PCA module: a test dependency (skipped where missing, failed in CI, like every material)."""
    try:
        import sklearn.decomposition as module
    except ImportError:
        module = None
    require(module is not None, "scikit-learn (pip install scikit-learn), the reference PCA")
    return module


def _data(n=300, d=40, seed=0) -> torch.Tensor:
    """Correlated, shifted data with distinct variances along a few directions (like backbone features)."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(5.0, 0.1, d)
    mixing = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
    return (torch.randn(n, d, generator=g) * scales) @ mixing + 3.0


@pytest.mark.parametrize("k", [1, 2, 5])
def test_pca_matches_scikit_learn_up_to_sign(k, sklearn_decomposition):
    x = _data()
    ours = pca(x, k)
    reference = sklearn_decomposition.PCA(n_components=k, svd_solver="full").fit(x.numpy().astype(np.float64))
    expected_scores = reference.transform(x.numpy().astype(np.float64))
    scores = ours.transform(x).numpy()
    for j in range(k):  # each component may point either way: compare up to one sign per component
        sign = np.sign(np.dot(ours.components[j].numpy(), reference.components_[j]))
        assert sign != 0
        np.testing.assert_allclose(ours.components[j].numpy() * sign, reference.components_[j], atol=1e-8)
        np.testing.assert_allclose(scores[:, j] * sign, expected_scores[:, j], atol=1e-6)
    np.testing.assert_allclose(ours.explained_variance.numpy(), reference.explained_variance_, rtol=1e-8)
    np.testing.assert_allclose(ours.explained_variance_ratio.numpy(), reference.explained_variance_ratio_, rtol=1e-8)
    np.testing.assert_allclose(ours.mean.numpy(), reference.mean_, atol=1e-10)


def test_new_points_project_like_scikit_learn_and_signs_are_fixed(sklearn_decomposition):
    x, other = _data(seed=1), _data(n=20, seed=2)
    ours = pca(x, 2)
    reference = sklearn_decomposition.PCA(n_components=2, svd_solver="full").fit(x.numpy().astype(np.float64))
    signs = np.sign(np.sum(ours.components.numpy() * reference.components_, axis=1))
    np.testing.assert_allclose(ours.transform(other).numpy() * signs, reference.transform(other.numpy()), atol=1e-6)
    # The sign convention: each component's largest entry is positive, whatever the data's order.
    biggest = ours.components.gather(1, ours.components.abs().argmax(1, keepdim=True))
    assert (biggest > 0).all()
    shuffled = pca(x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))], 2)
    np.testing.assert_allclose(shuffled.components.numpy(), ours.components.numpy(), atol=1e-8)


def test_bad_shapes_are_refused_with_the_shape():
    with pytest.raises(ValueError, match="n >= 2"):
        pca(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="k must be"):
        pca(torch.zeros(10, 3), k=4)
