"""Feature caching and the fast forward: exactness against the plain pipeline, and cache invalidation.

References: ``eval_transform`` + ``load_image`` (the uncached pipeline), ``model.features`` in default
settings, ``hashlib`` and the photos' MANIFEST.tsv for content hashes, and the uncached ``train_frozen``.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image, ImageOps
from torchvision.models import MobileNet_V2_Weights

from tlcourse.data import TransformSettings, eval_transform, load_course_data, load_image
from tlcourse.features import (
    FastBackbone,
    FeatureKey,
    batches_of_inputs,
    clear_memory_cache,
    compute_features,
    extract_features,
    feature_key,
    features_for_files,
)
from tlcourse.files import sha256_file
from tlcourse.inference import FastModel
from tlcourse.models import build_model
from tlcourse.recipes import train_frozen

SETTINGS = TransformSettings(resize=232, crop=224)  # MobileNetV2's IMAGENET1K_V2 preset


@pytest.fixture(autouse=True)
def _fresh_memory():
    """Each test starts and ends with an empty in-memory cache, so counts show where vectors came from."""
    clear_memory_cache()
    yield
    clear_memory_cache()


def some_photos(data_dir: Path, n_per_class: int = 3) -> list[Path]:
    """A few real photos of each class, including portrait and landscape ones."""
    return [p for c in ("dog", "hotdog") for p in sorted((data_dir / c).glob("*.jpg"))[:n_per_class]]


def reference_inputs(paths, settings: TransformSettings = SETTINGS) -> torch.Tensor:
    """The uncached pipeline, photo by photo: ``eval_transform(load_image(path))``."""
    transform = eval_transform(settings)
    return torch.stack([transform(load_image(p)) for p in paths])


@pytest.fixture
def small_model():
    """A randomly initialised MobileNetV2 model: same code paths as the real one, no weights file needed."""
    torch.manual_seed(0)
    return build_model(2, "mobilenet_v2", weights=None)


@pytest.fixture
def photo_folder(tmp_path, data_dir) -> Path:
    """A private copy of four real photos, safe to edit."""
    folder = tmp_path / "photos"
    for i, src in enumerate(some_photos(data_dir, 2)):
        (folder / src.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, folder / src.parent.name / f"{i}.jpg")
    return folder


def differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Relative comparison: a random backbone's features are tiny (~1e-9), so no absolute tolerance."""
    return not torch.allclose(a, b, rtol=1e-3, atol=0)


def assert_close_to_scale(got: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> None:
    """Equal up to float rounding, relative to the features' own size.

    A random backbone's features are tiny (~1e-9): a fixed ``atol=1e-4`` would accept all zeros. Here the
    absolute tolerance is ``rtol`` times the largest expected value, so zeros (or a wrong photo) fail.
    """
    scale = expected.abs().max()
    assert scale > 0, "the reference features are all zero: nothing to compare"
    torch.testing.assert_close(got, expected, rtol=rtol, atol=rtol * scale.item())


def torchvision_features(model, paths) -> torch.Tensor:
    """An independent reference for a MobileNetV2 model's features, nothing of tlcourse's pipeline in it.

    torchvision's own ``mobilenet_v2`` with the model's backbone weights and no classifier, fed with the
    IMAGENET1K_V2 preset transform (resize 232, crop 224, as :data:`SETTINGS`) of each photo opened with
    Pillow, one photo at a time.
    """
    net = torchvision.models.mobilenet_v2(weights=None)
    net.classifier = torch.nn.Identity()
    net.load_state_dict(model.backbone.state_dict())
    net.eval()
    preset = MobileNet_V2_Weights.IMAGENET1K_V2.transforms()
    rows = []
    with torch.no_grad():
        for path in paths:
            with Image.open(path) as img:
                rows.append(net(preset(ImageOps.exif_transpose(img).convert("RGB")).unsqueeze(0)))
    return torch.cat(rows)


def files_of(folder: Path) -> tuple[list[str], list[int]]:
    paths = sorted(str(p) for p in folder.rglob("*.jpg"))
    return paths, [int(Path(p).parent.name == "hotdog") for p in paths]


# --------------------------------------------------------------------------- inputs and hashes
@pytest.mark.parametrize("batch_size, threads", [(4, 1), (5, 2), (32, 0)])
def test_batched_inputs_equal_the_eval_transform_exactly(data_dir, batch_size, threads):
    paths = some_photos(data_dir, 4)
    expected = reference_inputs(paths)
    batches = list(batches_of_inputs([str(p) for p in paths], SETTINGS, batch_size, threads))
    assert [len(b) for b in batches][:-1] == [batch_size] * (len(batches) - 1)
    assert torch.equal(torch.cat(batches), expected)  # bit for bit, not just close


def test_batched_inputs_follow_the_transform_settings(data_dir):
    paths = [str(p) for p in some_photos(data_dir, 1)]
    other = TransformSettings(resize=160, crop=128, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    got = torch.cat(list(batches_of_inputs(paths, other, 8)))
    assert got.shape == (2, 3, 128, 128)
    assert torch.equal(got, reference_inputs(paths, other))


def test_file_sha256_matches_hashlib_and_the_manifest(data_dir):
    manifest = {(row["class"], row["file"]): row["sha256"]
                for row in csv.DictReader(open(data_dir / "MANIFEST.tsv"), delimiter="\t")}
    for path in some_photos(data_dir, 2):
        assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
        assert sha256_file(path) == manifest[(path.parent.name, path.name)]


def test_unreadable_photo_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        sha256_file(tmp_path / "gone.jpg")


# --------------------------------------------------------------------------- the fast forward
def test_fast_forward_matches_plain_features_with_real_weights(real_weights, data_dir):
    model = build_model(2)  # real ImageNet MobileNetV2
    paths = some_photos(data_dir, 3)
    x = reference_inputs(paths)
    model.freeze().eval()
    with torch.no_grad():
        expected = model.features(x)
    fast = FastBackbone(model)
    assert fast.fused and fast.channels_last
    got = fast(x)
    assert got.shape == expected.shape == (6, model.n_features)
    # Folding BatchNorm and NHWC kernels only change float rounding.
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # And from files, through decoding threads:
    torch.testing.assert_close(extract_features(model, [str(p) for p in paths], batch_size=4), expected,
                               rtol=1e-4, atol=1e-4)
    # The thread setting used while extracting is put back afterwards.
    threads = torch.get_num_threads()
    extract_features(model, [str(paths[0])], torch_threads=1)
    assert torch.get_num_threads() == threads
    # The model itself is untouched: still contiguous weights, still not fused.
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())
    conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()
    # FastModel: the head on the fast features gives the whole model's logits.
    with torch.no_grad():
        torch.testing.assert_close(FastModel(model)(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backbone", ["resnet18", "vgg11"])
def test_fast_forward_matches_plain_features_for_other_backbones(backbone):
    torch.manual_seed(0)
    model = build_model(2, backbone, weights=None).freeze().eval()
    # Give BatchNorm non-trivial statistics, so folding it is really tested.
    for module in model.backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.features(x)
    assert_close_to_scale(FastBackbone(model)(x), expected)


# --------------------------------------------------------------------------- keys
def test_feature_key_changes_with_each_ingredient(small_model):
    key = feature_key(small_model, SETTINGS)
    assert key == feature_key(small_model, SETTINGS)  # deterministic
    variants = [
        FeatureKey("resnet18", key.weights, key.fingerprint, key.settings),
        FeatureKey(key.backbone, "MobileNet_V2_Weights.IMAGENET1K_V1", key.fingerprint, key.settings),
        FeatureKey(key.backbone, key.weights, "0" * 64, key.settings),
        FeatureKey(key.backbone, key.weights, key.fingerprint, TransformSettings(resize=256, crop=224)),
        FeatureKey(key.backbone, key.weights, key.fingerprint, TransformSettings(232, 224, std=(0.2, 0.2, 0.2))),
    ]
    digests = {key.digest} | {v.digest for v in variants}
    assert len(digests) == 1 + len(variants)
    assert key.filename.startswith("mobilenet_v2-random-") and key.filename.endswith(".pt")


def test_fingerprint_follows_every_backbone_weight(small_model):
    before = feature_key(small_model).fingerprint
    with torch.no_grad():
        small_model.head[-1].weight.add_(1.0)  # the head is not part of the backbone's features
    assert feature_key(small_model).fingerprint == before
    bn = next(m for m in small_model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean[0] += 1e-3  # a buffer, not a parameter: it changes the features too
    assert feature_key(small_model).fingerprint != before


# --------------------------------------------------------------------------- the disk cache
def test_second_call_reuses_memory_then_disk(small_model, photo_folder, tmp_path):
    paths, labels = files_of(photo_folder)
    cache = tmp_path / "cache"
    first = features_for_files(small_model, paths, labels, cache, SETTINGS)
    assert (first.n_computed, first.n_from_memory, first.n_from_disk) == (4, 0, 0)
    assert first.cache_file.parent == cache and first.cache_file.is_file()
    again = features_for_files(small_model, paths, labels, cache, SETTINGS)
    assert (again.n_computed, again.n_from_memory, again.n_from_disk) == (0, 4, 0)
    clear_memory_cache()  # as in a new kernel
    from_disk = features_for_files(small_model, paths, labels, cache, SETTINGS)
    assert (from_disk.n_computed, from_disk.n_from_memory, from_disk.n_from_disk) == (0, 0, 4)
    assert torch.equal(from_disk.features, first.features)
    assert from_disk.labels.tolist() == labels and from_disk.file_paths == paths
    # And the cached vectors are the photos' features, as torchvision's own model and transforms compute them.
    assert_close_to_scale(first.features, torchvision_features(small_model, paths))


def test_an_edited_photo_is_recomputed_and_a_renamed_one_is_not(small_model, photo_folder, tmp_path):
    paths, labels = files_of(photo_folder)
    cache = tmp_path / "cache"
    before = features_for_files(small_model, paths, labels, cache, SETTINGS)
    # Edit one photo in place (mirror it); rename another without changing its bytes.
    edited = Path(paths[0])
    with Image.open(edited) as img:
        ImageOps.mirror(img.convert("RGB")).save(edited, quality=95)
    renamed = Path(paths[1]).with_name("renamed.jpg")
    Path(paths[1]).rename(renamed)
    new_paths = [paths[0], str(renamed), *paths[2:]]
    clear_memory_cache()
    after = features_for_files(small_model, new_paths, labels, cache, SETTINGS)
    assert (after.n_computed, after.n_from_disk) == (1, 3)
    assert differs(after.features[0], before.features[0])
    assert torch.equal(after.features[1:], before.features[1:])
    # The recomputed vector is the edited photo's (an independent reference, not the package's extractor).
    assert_close_to_scale(after.features[:1], torchvision_features(small_model, [paths[0]]))


def test_a_touched_but_unchanged_photo_is_not_recomputed(small_model, photo_folder, tmp_path):
    paths, labels = files_of(photo_folder)
    features_for_files(small_model, paths, labels, tmp_path / "cache", SETTINGS)
    Path(paths[0]).touch()  # new mtime, same bytes: keyed by content, so still valid
    clear_memory_cache()
    assert features_for_files(small_model, paths, labels, tmp_path / "cache", SETTINGS).n_from_disk == 4


def test_a_changed_backbone_invalidates_the_cache(small_model, photo_folder, tmp_path):
    paths, labels = files_of(photo_folder)
    cache = tmp_path / "cache"
    before = features_for_files(small_model, paths, labels, cache, SETTINGS)
    # Same name and weights name, one weight changed (as fine-tuning does).
    with torch.no_grad():
        next(small_model.backbone.parameters()).mul_(1.5)
    clear_memory_cache()
    changed = features_for_files(small_model, paths, labels, cache, SETTINGS)
    assert changed.n_computed == 4 and changed.cache_file != before.cache_file
    assert differs(changed.features, before.features)
    # Another architecture.
    torch.manual_seed(0)
    other = build_model(2, "resnet18", weights=None)
    clear_memory_cache()
    resnet = features_for_files(other, paths, labels, cache, SETTINGS)
    assert resnet.n_computed == 4 and resnet.features.shape == (4, other.n_features)
    assert len(list(cache.glob("*.pt"))) == 3  # one store per key, none overwritten


def test_real_and_random_weights_do_not_share_a_cache(real_weights, photo_folder, tmp_path):
    paths, labels = files_of(photo_folder)
    pretrained = build_model(2)
    torch.manual_seed(0)
    random_ = build_model(2, weights=None)
    a = features_for_files(pretrained, paths, labels, tmp_path, SETTINGS)
    b = features_for_files(random_, paths, labels, tmp_path, SETTINGS)
    assert a.n_computed == b.n_computed == 4
    assert "IMAGENET1K_V2" in a.cache_file.name and "random" in b.cache_file.name


def test_changed_transform_settings_invalidate_the_cache(small_model, photo_folder, tmp_path):
    paths, labels = files_of(photo_folder)
    cache = tmp_path / "cache"
    before = features_for_files(small_model, paths, labels, cache, SETTINGS)
    for settings in (TransformSettings(resize=256, crop=224), TransformSettings(232, 224, mean=(0.5, 0.5, 0.5))):
        clear_memory_cache()
        other = features_for_files(small_model, paths, labels, cache, settings)
        assert other.n_computed == 4
        assert differs(other.features, before.features)
    clear_memory_cache()
    assert features_for_files(small_model, paths, labels, cache, SETTINGS).n_from_disk == 4


def test_a_damaged_cache_file_is_rebuilt(small_model, photo_folder, tmp_path):
    paths, labels = files_of(photo_folder)
    first = features_for_files(small_model, paths, labels, tmp_path, SETTINGS)
    first.cache_file.write_bytes(b"not a torch file")
    clear_memory_cache()
    again = features_for_files(small_model, paths, labels, tmp_path, SETTINGS)
    assert again.n_computed == 4 and torch.equal(again.features, first.features)
    clear_memory_cache()
    assert features_for_files(small_model, paths, labels, tmp_path, SETTINGS).n_from_disk == 4


def test_default_cache_dir_is_under_the_output_folder(small_model, photo_folder, output_dir):
    from tlcourse.config import get_config

    paths, labels = files_of(photo_folder)
    result = features_for_files(small_model, paths, labels, get_config().feature_cache, SETTINGS)
    assert result.cache_file.parent == output_dir / "feature-cache"
    assert result.cache_file.is_file()


def test_memory_only_writes_nothing(small_model, photo_folder, output_dir, tmp_path):
    paths, labels = files_of(photo_folder)
    result = features_for_files(small_model, paths, labels, False, SETTINGS)
    assert result.cache_file is None and not output_dir.exists()
    assert features_for_files(small_model, paths, labels, False, SETTINGS).n_from_memory == 4


def test_photo_folder_is_never_written(small_model, photo_folder, output_dir):
    paths, labels = files_of(photo_folder)
    before = {p: Path(p).read_bytes() for p in paths}
    features_for_files(small_model, paths, labels, output_dir / "feature-cache", SETTINGS)
    assert sorted(str(p) for p in photo_folder.rglob("*") if p.is_file()) == sorted(before)
    assert all(Path(p).read_bytes() == b for p, b in before.items())


# --------------------------------------------------------------------------- parts, loaders, recipe
def test_compute_features_lines_up_with_the_parts(small_model, data_dir, tmp_path):
    data = load_course_data(data_dir, small_model.transform_settings, seed=0, per_class=6)  # the model's (issue 20)
    sets = compute_features(small_model, data, ("train", "test"), cache_dir=tmp_path)
    for name in ("train", "test"):
        part = data.part(name)
        assert sets[name].file_paths == list(part["file_path"])
        assert sets[name].labels.tolist() == list(part["label"])
    batch = next(iter(sets["train"].loader(batch_size=4, shuffle=True, seed=3)))
    features, y, index = batch
    assert features.shape == (4, small_model.n_features)
    assert torch.equal(features, sets["train"].features[index])
    assert torch.equal(y, torch.as_tensor(data.part("train")["label"].to_numpy()[index.numpy()]))


def test_augment_needs_the_uncached_loop(small_model, data_dir):
    data = load_course_data(data_dir, SETTINGS, per_class=3)
    with pytest.raises(ValueError, match="cache=False"):
        train_frozen(small_model, data, epochs=1, augment=True)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # trains on the real photos
def test_cached_and_uncached_frozen_training_agree(real_weights, data_dir, tmp_path):
    """The fast recipe trains the same head as the plain loop that recomputes the backbone every batch."""
    data = load_course_data(data_dir, seed=0, per_class=14)  # 22 train, 3 val, 3 test photos
    torch.manual_seed(0)
    base = build_model(2)
    data.settings = base.transform_settings
    cached, uncached = copy.deepcopy(base), copy.deepcopy(base)

    # views=0: the uncached loop has no augmentation either, so both see the clean photos only.
    h_cached = train_frozen(cached, data, epochs=2, batch_size=8, seed=1, cache_dir=tmp_path, verbose=False, views=0)
    h_plain = train_frozen(uncached, data, epochs=2, batch_size=8, seed=1, cache=False)
    # Both leave the model in train mode with the frozen backbone in eval mode.
    assert cached.training and uncached.training and not cached.backbone.training

    assert len(h_cached.epochs) == len(h_plain.epochs) == 2 and h_cached.best_epoch == h_plain.best_epoch
    for a, b in zip(h_cached.epochs, h_plain.epochs):
        for k in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k
    for (name, a), (_, b) in zip(cached.head.state_dict().items(), uncached.head.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(cached.head[-1].weight, base.head[-1].weight)  # it did learn

    # Same features and the same predictions on photos neither saw in training.
    test_paths = list(data.part("test")["file_path"]) + list(data.part("val")["file_path"])
    x = reference_inputs(test_paths, data.settings)
    cached.eval(), uncached.eval()
    with torch.no_grad():
        cached_features = features_for_files(cached, test_paths, [0] * len(test_paths), tmp_path).features
        torch.testing.assert_close(cached_features, uncached.features(x), rtol=1e-4, atol=1e-4)
        p_cached, p_plain = torch.softmax(cached(x), 1), torch.softmax(uncached(x), 1)
        torch.testing.assert_close(p_cached, p_plain, rtol=1e-4, atol=1e-5)
        assert torch.equal(p_cached.argmax(1), p_plain.argmax(1))
        # The trained model used on images predicts as its head on the cached vectors.
        torch.testing.assert_close(torch.softmax(cached.head(cached_features), 1), p_cached, rtol=1e-4, atol=1e-5)
