"""The cut recipe: the backbone split at a cut composes to the model; activations cached at the cut equal a
plain forward of the layers below it (float32 and float16); cache hits and invalidation by cut, views,
settings and photo content; training moves the blocks above the cut and the head only, BatchNorm
statistics untouched, best epoch by validation loss; the checkpoint is an ordinary model; the decision rule."""

from __future__ import annotations

import dataclasses
import inspect
import shutil

import pytest
import torch

from tlcourse.augcache import AugmentSettings, augmented_view
from tlcourse.checkpoint import load_checkpoint, save_checkpoint
from tlcourse.cut import CUT_POINTS, activation_shape, choose_recipe, cut_activations, split_at, stages, train_cut
from tlcourse.data import eval_transform, load_course_data, load_image
from tlcourse.errors import DataError
from tlcourse.features import clear_memory_cache, for_predictions, sha256_file
from tlcourse.models import build_model

CUT = "features.17"


@pytest.fixture(scope="module")
def model(real_weights):
    return build_model(2, "mobilenet_v2", weights="DEFAULT", offline=True).eval()


@pytest.fixture(autouse=True)
def empty_memory():
    clear_memory_cache()
    yield
    clear_memory_cache()


@pytest.fixture
def photos(two_per_class):
    return two_per_class  # conftest: two real photos of each class, copied


LABELS = [0, 0, 1, 1]


# --------------------------------------------------------------------------- the cut
@pytest.mark.parametrize("backbone", sorted(CUT_POINTS))
def test_every_cut_point_splits_the_model_into_bottom_and_top(backbone):
    torch.manual_seed(0)
    model = build_model(2, backbone, weights=None).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        whole = model(x)
        for cut in CUT_POINTS[backbone]:
            bottom, top = split_at(model, cut)
            assert torch.equal(top(bottom(x)), whole), cut
            assert bottom(x).shape[1:] == activation_shape(model, cut)
            # The top shares the model's modules: its weights are the model's weights.
            assert {id(p) for p in top.parameters()} <= {id(p) for p in model.parameters()}
    names = [name for name, _ in stages(model.backbone)]
    assert all(any(n == c or n.startswith(c + ".") for n in names) for c in CUT_POINTS[backbone])


def test_an_unknown_cut_names_the_sensible_ones():
    model = build_model(2, "mobilenet_v2", weights=None)
    with pytest.raises(DataError, match="features.17"):
        split_at(model, "features.99")


# --------------------------------------------------------------------------- the cache
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.float16, 2e-3)])
def test_cached_activations_are_the_plain_forward_to_the_cut(model, photos, dtype, tolerance):
    found = cut_activations(model, CUT, photos, LABELS, views=2, dtype=dtype)
    assert found.values.shape == (4, 3, *activation_shape(model, CUT)) and found.values.dtype == dtype
    bottom, _ = split_at(model, CUT)
    settings = model.transform_settings
    for i, path in enumerate(photos):
        image, sha = load_image(path), sha256_file(path)
        x = torch.stack([eval_transform(settings)(image),
                         *(augmented_view(image, sha, v, AugmentSettings(), settings) for v in range(2))])
        with torch.no_grad():
            plain = bottom(x)  # the model's own layers, not the fused fast copy
        assert plain.abs().max() > 0.5  # real activations
        scale = float(plain.abs().max())
        torch.testing.assert_close(found.values[i].float(), plain, rtol=tolerance, atol=tolerance * scale)
    assert not torch.allclose(found.values[:, 1].float(), found.values[:, 2].float(), atol=0.05)  # two views


def test_cache_hits_and_what_invalidates_them(model, photos, tmp_path):
    cache = tmp_path / "cache"
    first = cut_activations(model, CUT, photos, LABELS, views=2, cache_dir=cache)
    assert (first.n_computed, first.n_from_memory, first.n_from_disk) == (12, 0, 0)
    again = cut_activations(model, CUT, photos, LABELS, views=2, cache_dir=cache)
    assert (again.n_computed, again.n_from_memory, again.n_from_disk) == (0, 12, 0)
    assert torch.equal(again.values, first.values)
    clear_memory_cache()
    disk = cut_activations(model, CUT, photos, LABELS, views=2, cache_dir=cache)
    assert (disk.n_computed, disk.n_from_disk) == (0, 12) and torch.equal(disk.values, first.values)
    # Another cut, other augmentation settings, another dtype: new stores.
    assert cut_activations(model, "features.18", photos, LABELS, views=2, cache_dir=cache).n_computed == 12
    other = AugmentSettings(flip=0.0)
    changed = cut_activations(model, CUT, photos, LABELS, views=2, augment=other, cache_dir=cache)
    assert (changed.n_computed, changed.n_from_memory) == (8, 4)  # the clean photos are still valid
    assert cut_activations(model, CUT, photos, LABELS, views=2, cache_dir=cache, dtype=torch.float32).n_computed == 12
    # One more view: only it is computed.
    assert cut_activations(model, CUT, photos, LABELS, views=3, cache_dir=cache).n_computed == 4
    # Other transform settings (the crop) or other weights below the cut: a new store.
    resized = build_model(2, "mobilenet_v2", weights="DEFAULT", offline=True).eval()
    resized.transform_settings = dataclasses.replace(resized.transform_settings, crop=192)
    assert cut_activations(resized, CUT, photos, LABELS, cache_dir=cache).n_computed == 4
    changed_below = build_model(2, "mobilenet_v2", weights="DEFAULT", offline=True).eval()
    with torch.no_grad():
        changed_below.backbone.features[3].conv[0][0].weight.mul_(1.01)
    assert cut_activations(changed_below, CUT, photos, LABELS, cache_dir=cache).n_computed == 4
    # Weights above the cut do not change what is below it: the cache still holds.
    changed_above = build_model(2, "mobilenet_v2", weights="DEFAULT", offline=True).eval()
    with torch.no_grad():
        changed_above.backbone.features[17].conv[0][0].weight.mul_(1.01)
    assert cut_activations(changed_above, CUT, photos, LABELS, cache_dir=cache).n_computed == 0
    # An edited photo is recomputed, the others are not.
    photos[0].write_bytes(photos[2].read_bytes())
    edited = cut_activations(model, CUT, photos[:2], LABELS[:2], views=2, cache_dir=cache)
    assert (edited.n_computed, edited.n_from_memory) == (0, 6)  # its new content is photo 2's: cached
    shutil.copyfile(photos[1], photos[0])
    with open(photos[0], "ab") as handle:
        handle.write(b"\0")  # new bytes, same picture: a new sha256
    assert cut_activations(model, CUT, photos[:2], LABELS[:2], views=2, cache_dir=cache).n_computed == 3


# --------------------------------------------------------------------------- training
@pytest.fixture
def small_data(data_dir, model):
    return load_course_data(data_dir, model.transform_settings, seed=0, per_class=10)


def test_train_cut_moves_the_top_only_and_keeps_batchnorm_statistics(small_data, tmp_path, one_torch_thread):
    model = build_model(2, "mobilenet_v2", weights="DEFAULT", offline=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = train_cut(model, small_data, CUT, epochs=3, views=1, cache_dir=tmp_path / "cache", verbose=False)
    after = model.state_dict()
    for name, value in before.items():
        moved = not torch.equal(value, after[name])
        if "running_" in name or "num_batches_tracked" in name:
            assert not moved, f"BatchNorm statistics changed: {name}"
        elif name.startswith(("backbone.features.17.", "backbone.features.18.", "head.")) and name.endswith("weight"):
            assert moved, f"{name} did not learn"
        elif name.startswith("backbone.") and not name.startswith(("backbone.features.17.", "backbone.features.18.")):
            assert not moved, f"{name} is below the cut but changed"
    losses = [r["val_loss"] for r in history.epochs]
    assert history.best_epoch == losses.index(min(losses))  # best epoch by validation loss
    assert model.frozen and not any(p.requires_grad for p in model.backbone.parameters())


def test_the_checkpoint_is_an_ordinary_model(small_data, tmp_path, one_torch_thread):
    model = build_model(2, "mobilenet_v2", weights="DEFAULT", offline=True)
    train_cut(model, small_data, "features.18", epochs=1, views=0, cache_dir=tmp_path / "cache", verbose=False)
    path = save_checkpoint(tmp_path / "cut.pt", model, small_data.classes, extra={"method": "cut"})
    loaded, _ = load_checkpoint(path)
    x = next(iter(small_data.loader("val", batch_size=4)))[0]
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        torch.testing.assert_close(for_predictions(loaded)(x), model(x), rtol=1e-4, atol=1e-4)
    # The cached validation activations, through the top, give the model's logits.
    val = cut_activations(model, "features.18", list(small_data.part("val")["file_path"]),
                          list(small_data.part("val")["label"]), dtype=torch.float32)
    _, top = split_at(loaded, "features.18")
    with torch.no_grad():
        torch.testing.assert_close(top.eval()(val.values[:, 0]), loaded(x[:len(val)]), rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------- the decision rule
def test_the_rule_takes_the_cheaper_unless_validation_clearly_says_otherwise():
    # Cheapest first. "cut" beats "frozen" by far more than the seeds' spread: it wins over the cheaper.
    clear = {"frozen": [0.30, 0.32, 0.31], "cut": [0.10, 0.11, 0.12], "full": [0.09, 0.12, 0.10]}
    assert choose_recipe(clear)[0] == "cut"  # full is best by a hair, within cut's spread
    # Within the noise (a small folder's few validation photos): the cheaper wins.
    noisy = {"frozen": [0.30, 0.10, 0.20], "cut": [0.15, 0.12, 0.18]}
    assert choose_recipe(noisy)[0] == "frozen"
    # The best is the cheapest: it wins.
    assert choose_recipe({"frozen": [0.1, 0.1], "cut": [0.2, 0.2]})[0] == "frozen"
    # One seed: no spread, the lowest wins.
    assert choose_recipe({"frozen": [0.2], "cut": [0.19]})[0] == "cut"
    with pytest.raises(ValueError):
        choose_recipe({})



def test_the_default_recipe_is_what_the_rule_picks_from_the_stored_benchmark_figures():
    """benchmarks/results/cut.json holds the figures of the last full `benchmarks/cut.py` run (validation loss
    with the changes, per seed); the rule, run again on them, picks the recipe that `tlcourse train` and
    `train_reference` use by default."""
    import json
    from pathlib import Path

    from tlcourse.config import DEFAULT_METHOD
    from tlcourse.cut import DEFAULT_CUTS
    from tlcourse.recipes import VIEWS, train_reference

    saved = json.loads((Path(__file__).parents[1] / "benchmarks" / "results" / "cut.json").read_text())
    candidates = [row for row in saved["rows"] if not row["reference"]]
    assert len(candidates) >= 5 and all(len(row["seeds"]) >= 2 for row in candidates), "several seeds per candidate"
    name, _ = choose_recipe({row["name"]: [sum(s["loss"]) / len(s["loss"]) for s in row["seeds"]] for row in candidates})
    recipe = next(row["recipe"] for row in candidates if row["name"] == name)
    assert recipe["method"] == DEFAULT_METHOD == inspect.signature(train_reference).parameters["method"].default
    assert recipe.get("views", VIEWS) == VIEWS
    if recipe["method"] == "cut":
        assert recipe["cut"] == DEFAULT_CUTS["mobilenet_v2"]
