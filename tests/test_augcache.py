"""Augmented-view feature cache: hits (memory and disk), invalidation by augmentation settings, view index
and photo content; cached vectors equal a direct forward pass of the same view; views are repeatable,
different from each other, and one view per photo is drawn each epoch."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tlcourse import augcache
from tlcourse.augcache import AugmentSettings, augmented_features, augmented_view
from tlcourse.data import load_image
from tlcourse.features import clear_memory_cache, sha256_file
from tlcourse.models import build_model


@pytest.fixture(scope="module")
def model(real_weights):
    # Pretrained: random weights give features near 0 for every photo, which would hide differences.
    return build_model(2, "mobilenet_v2", weights="DEFAULT", offline=True).eval()


def differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    return float((a - b).norm()) > 0.05 * float(a.norm())


@pytest.fixture
def photos(two_per_class):
    return two_per_class  # conftest: two real photos of each class, copied


@pytest.fixture(autouse=True)
def empty_memory():
    clear_memory_cache()
    yield
    clear_memory_cache()


LABELS = [0, 0, 1, 1]


def test_cached_vectors_are_the_backbone_features_of_each_view(model, photos, tmp_path):
    result = augmented_features(model, photos, LABELS, views=2, cache_dir=tmp_path / "cache")
    assert result.features.shape == (4, 2, model.n_features) and result.n_computed == 8
    settings = model.transform_settings
    for i, path in enumerate(photos):
        sha = sha256_file(path)
        x = torch.stack([augmented_view(load_image(path), sha, v, AugmentSettings(), settings) for v in range(2)])
        with torch.no_grad():
            direct = model.features(x)  # the plain model, not the fast copy
        assert direct.abs().max() > 0.1  # real features, not near-zero ones
        torch.testing.assert_close(result.features[i], direct, rtol=1e-3, atol=1e-3 * float(direct.abs().max()))
    assert differ(result.features[:, 0], result.features[:, 1])  # two different views


def test_a_view_is_the_same_every_time_and_leaves_the_random_state_alone(photos, model):
    image, sha = load_image(photos[0]), sha256_file(photos[0])
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = augmented_view(image, sha, 1, AugmentSettings(), model.transform_settings)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = augmented_view(image, sha, 1, AugmentSettings(), model.transform_settings)
    c = augmented_view(image, sha, 2, AugmentSettings(), model.transform_settings)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_hits_from_memory_then_from_disk(model, photos, tmp_path):
    first = augmented_features(model, photos, LABELS, views=2, cache_dir=tmp_path / "cache")
    again = augmented_features(model, photos, LABELS, views=2, cache_dir=tmp_path / "cache")
    assert (again.n_computed, again.n_from_memory, again.n_from_disk) == (0, 8, 0)
    clear_memory_cache()  # as a new process (a rerun) would start
    rerun = augmented_features(model, photos, LABELS, views=2, cache_dir=tmp_path / "cache")
    assert (rerun.n_computed, rerun.n_from_disk) == (0, 8)
    assert torch.equal(rerun.features, first.features)


def test_more_views_compute_only_the_new_view_indices(model, photos, tmp_path):
    augmented_features(model, photos, LABELS, views=2, cache_dir=tmp_path / "cache")
    more = augmented_features(model, photos, LABELS, views=3, cache_dir=tmp_path / "cache")
    assert (more.n_computed, more.n_from_memory) == (4, 8)  # view 2 of each photo


def test_other_settings_are_computed_again(model, photos, tmp_path):
    augmented_features(model, photos, LABELS, views=2, cache_dir=tmp_path / "cache")
    other = dataclasses.replace(AugmentSettings(), scale=(0.5, 1.0))
    changed = augmented_features(model, photos, LABELS, views=2, augment=other, cache_dir=tmp_path / "cache")
    assert changed.n_computed == 8 and changed.cache_file.name != augcache.AugmentKey(
        augcache.feature_key(model), AugmentSettings()).filename


def test_an_edited_photo_is_computed_again_a_renamed_one_is_not(model, photos, tmp_path):
    augmented_features(model, photos, LABELS, views=2, cache_dir=tmp_path / "cache")
    edited = photos[0]
    load_image(edited).save(edited, format="JPEG", quality=80)  # same photo, other bytes
    renamed = photos[2].with_name("renamed.jpg")
    photos[2].rename(renamed)
    paths = [edited, photos[1], renamed, photos[3]]
    clear_memory_cache()
    result = augmented_features(model, paths, LABELS, views=2, cache_dir=tmp_path / "cache")
    assert (result.n_computed, result.n_from_disk) == (2, 6)  # only the edited photo's two views


def test_the_loader_draws_one_view_per_photo_each_epoch(model, photos):
    result = augmented_features(model, photos, LABELS, views=3)
    loader = result.loader(batch_size=4, seed=0)
    seen = []
    for _ in range(6):
        features, labels, index = next(iter(loader))
        assert sorted(index.tolist()) == [0, 1, 2, 3] and labels.tolist() == [LABELS[i] for i in index]
        views = [int((result.features[i] == f).all(1).nonzero()[0]) for i, f in zip(index.tolist(), features)]
        seen.append(tuple(views[j] for j in index.argsort().tolist()))
    assert len(set(seen)) > 1  # the drawn views change from epoch to epoch


def test_the_loader_adds_the_clean_features_as_one_more_view(model, photos):
    result = augmented_features(model, photos, LABELS, views=1)
    clean = torch.randn(4, result.features.shape[-1])  # stand-ins, told apart from every view
    drawn = set()
    for epoch in range(8):
        for features, _, index in result.loader(batch_size=4, seed=epoch, clean=clean):
            for i, f in zip(index.tolist(), features):
                drawn.add("clean" if torch.equal(f, clean[i]) else "view" if torch.equal(f, result.features[i, 0]) else "?")
    assert drawn == {"clean", "view"}


def test_train_frozen_trains_on_the_cached_views_computed_once(model, data_dir, tmp_path, capsys):
    """The recipe's default: each training photo's views are computed once, then every rerun reads them;
    the head they train differs from the head trained on the clean features alone."""
    from tlcourse.data import load_course_data
    from tlcourse.recipes import train_frozen

    data = load_course_data(data_dir, model.transform_settings, seed=0, per_class=8)  # 12 train photos

    def head(views: int, **kw):
        torch.manual_seed(0)  # the same initial head every time, as `tlcourse train` seeds before building
        m = build_model(2, "mobilenet_v2", weights="DEFAULT", offline=True)
        train_frozen(m, data, epochs=3, batch_size=4, cache_dir=tmp_path, views=views, **kw)
        return m.head.state_dict()

    with_views = head(2)
    assert "Computing features of 24 augmented view(s) of 12 photo(s)" in capsys.readouterr().out
    clear_memory_cache()
    rerun = head(2)
    assert "augmented view" not in capsys.readouterr().out  # read back from disk ...
    assert all(torch.equal(rerun[k], with_views[k]) for k in with_views)  # ... the same views: the same head
    clean_only = head(0)
    assert "augmented view" not in capsys.readouterr().out
    assert any(not torch.equal(with_views[k], clean_only[k]) for k in with_views)


def test_views_made_in_threads_are_the_views_made_in_order(model, photos):
    """Views are made ahead in threads; torchvision's random transforms share one global generator, so
    without care two threads would take each other's random numbers and the views would change."""
    in_order = augmented_features(model, photos, LABELS, views=3, decode_threads=0).features
    for threads in (1, 3):
        clear_memory_cache()
        got = augmented_features(model, photos, LABELS, views=3, decode_threads=threads, batch_size=5).features
        torch.testing.assert_close(got, in_order, rtol=1e-4, atol=1e-5)
