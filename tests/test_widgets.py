"""The widgets' Python side, driven without a browser on real photos, and the exclusion list.

Each widget is built, its controls are set or clicked as the front end would do
it, and the resulting state and images are checked against a reference computed
here with torchvision and the model directly.
"""

from __future__ import annotations

import copy
import hashlib
import io
import re
import shutil
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2

from tlcourse.calibration import Calibration
from tlcourse.checkpoint import save_checkpoint
from tlcourse.config import get_config
from tlcourse.data import (AugmentSettings, Downscale, TransformSettings, eval_transform, load_course_data,
                           load_image, scan_folder,
                           train_transform)
from tlcourse.exclusions import EXCLUSIONS_FILE, ExcludedPhotosWarning, ExclusionList
from tlcourse.models import build_model, weights_enum
from tlcourse.gradcam import GradCAM, upsample
from tlcourse.widgets import AugmentationExplorer, MistakesBrowser, PhotoTester, gradcam_section

from test_cli import assert_answers_vary

PER_CLASS = 8


@pytest.fixture(scope="module")
def model(real_weights, learner_folder):
    """MobileNetV2 with its real ImageNet weights and a seeded, untrained two-class head, its bias set so
    that half the learner's photos are called each class (the seeded head alone calls every photo
    hotdog): a model whose answers depend on the photo, asserted here."""
    torch.manual_seed(0)
    model = build_model(2, "mobilenet_v2").eval()
    transform = eval_transform(model.transform_settings)
    with torch.no_grad():
        logits = model(torch.stack([transform(load_image(p)) for p in _photos(learner_folder)]))
        difference = (logits[:, 1] - logits[:, 0]).sort().values
        middle = float(difference[len(difference) // 2 - 1] + difference[len(difference) // 2]) / 2
        scale = 3.0 / float(max(difference[-1] - middle, middle - difference[0]))  # the farthest at p = 0.95
        model.head[-1].weight.mul_(scale)
        model.head[-1].bias.copy_(model.head[-1].bias * scale - torch.tensor([0.0, middle * scale]))
        probs = torch.softmax(model(torch.stack([transform(load_image(p)) for p in _photos(learner_folder)])), 1)
    assert_answers_vary(probs.numpy())
    return model


@pytest.fixture(scope="module")
def learner_folder(tmp_path_factory, data_dir) -> Path:
    """A learner's photo folder: real photos, a few per class."""
    root = tmp_path_factory.mktemp("learner") / "photos"
    for name in ("dog", "hotdog"):
        (root / name).mkdir(parents=True)
        for path in sorted((data_dir / name).glob("*.jpg"))[:PER_CLASS]:
            shutil.copy2(path, root / name / path.name)
    return root


def _photos(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.jpg"))


def _checksums(folder: Path) -> dict[str, tuple[str, int, int]]:
    """sha256, size and mtime (ns) of every file under ``folder``, and which files there are."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size,
                                         p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _reference_input(path: Path) -> torch.Tensor:
    """The photo as a batch of one, with torchvision's own preset transform for the weights."""
    return weights_enum("mobilenet_v2").transforms()(load_image(path)).unsqueeze(0)


def _reference_logits(model, path: Path) -> np.ndarray:
    with torch.no_grad():
        return model(_reference_input(path))[0].double().numpy()


def _reference_probs(model, path: Path, temperature: float = 1.0) -> np.ndarray:
    """Softmax of the logits divided by the temperature, written out."""
    z = np.exp(_reference_logits(model, path) / temperature)
    return z / z.sum()


def _decode(jpeg: bytes) -> Image.Image:
    return Image.open(io.BytesIO(jpeg)).convert("RGB")


# --------------------------------------------------------------------------- photo tester
def test_photo_tester_path_box_shows_photo_and_probabilities(model, learner_folder):
    photo = _photos(learner_folder)[0]
    tester = PhotoTester(model, ["dog", "hotdog"])
    tester.build()
    assert "Upload a photo" in tester.result.value and tester.prediction is None

    tester.path_box.value = f'"{photo}"'  # what pasting a path (quoted, as Windows copies it) and Enter do

    got = np.array(list(tester.prediction.probabilities.values()))
    assert np.allclose(got, _reference_probs(model, photo), atol=2e-3)
    assert tester.prediction.label == ["dog", "hotdog"][int(got.argmax())]
    assert np.array_equal(np.asarray(tester.prediction.image), np.asarray(load_image(photo)))
    html = tester.result.value
    for name, p in tester.prediction.probabilities.items():
        assert name in html and f"{p:.1%}" in html
    assert 'class="tlcourse-tested-photo"' in html and photo.name in html


def test_photo_tester_predict_button_tests_the_typed_path(model, learner_folder):
    first, second = _photos(learner_folder)[0], _photos(learner_folder)[-1]
    tester = PhotoTester(model, ["dog", "hotdog"])
    tester.build()
    tester.path_box.value = str(first)  # Enter: the first photo is tested
    tester.prediction = None
    tester.path_box.unobserve_all("value")  # typed, not entered: only the button may test it now
    tester.path_box.value = str(second)
    assert tester.prediction is None
    tester.path_button.click()
    assert tester.prediction is not None and Path(tester.prediction.source).name == second.name
    got = np.array(list(tester.prediction.probabilities.values()))
    assert np.allclose(got, _reference_probs(model, second), atol=2e-3)
    assert second.name in tester.result.value


def test_photo_tester_upload_as_the_browser_sends_it(model, learner_folder):
    photos = _photos(learner_folder)
    tester = PhotoTester(model, ["dog", "hotdog"])
    tester.build()
    # The front end sends the file's bytes in the widget's state; set_state is that path.
    tester.upload.set_state({"value": [{"name": "my lunch.jpg", "type": "image/jpeg", "size": 1,
                                        "content": memoryview(photos[-1].read_bytes()), "last_modified": 0}]})
    assert tester.prediction.source == "my lunch.jpg" and tester.error is None
    got = np.array(list(tester.prediction.probabilities.values()))
    assert np.allclose(got, _reference_probs(model, photos[-1]), atol=2e-3)
    assert "my lunch.jpg" in tester.result.value

    tester.upload.set_state({"value": [{"name": "notes.txt", "type": "text/plain", "size": 5,
                                        "content": memoryview(b"hello"), "last_modified": 0}]})
    assert tester.prediction is None
    assert "Cannot read notes.txt as an image" in tester.result.value and "tlcourse-error" in tester.result.value


def test_photo_tester_turns_an_uploaded_phone_photo_upright(model, learner_folder):
    """Phones store portraits sideways plus an EXIF rotation tag; the upload must honour it."""
    photo = Image.open(_photos(learner_folder)[0]).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", exif=exif)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue())))  # Pillow's reference
    assert upright.size == photo.size[::-1]
    tester = PhotoTester(model, ["dog", "hotdog"])
    tester.build()
    tester.upload.set_state({"value": [{"name": "IMG_0001.jpg", "type": "image/jpeg", "size": 1,
                                        "content": memoryview(buffer.getvalue()), "last_modified": 0}]})
    assert tester.prediction.image.size == upright.size
    assert np.array_equal(np.asarray(tester.prediction.image), np.asarray(upright.convert("RGB")))


def test_photo_tester_bad_path_shows_a_clear_message(model, tmp_path):
    tester = PhotoTester(model, ["dog", "hotdog"])
    tester.build()
    missing = tmp_path / "no such photo.jpg"
    tester.path_box.value = str(missing)
    assert tester.prediction is None and str(missing) in tester.error
    assert "not found" in tester.result.value


def test_photo_tester_from_a_checkpoint_predicts_like_the_model(model, learner_folder, output_dir):
    path = save_checkpoint(output_dir / "model.pt", model, ["dog", "hotdog"])
    photo = _photos(learner_folder)[3]
    from_file = PhotoTester(path).predict(photo)
    in_memory = PhotoTester(model, ["dog", "hotdog"]).predict(photo)
    assert list(from_file.probabilities) == ["dog", "hotdog"]
    assert np.allclose(list(from_file.probabilities.values()), list(in_memory.probabilities.values()), atol=1e-6)


def test_photo_tester_fallback_is_a_figure(model, learner_folder):
    photo = _photos(learner_folder)[0]
    plt.close("all")
    PhotoTester(model, ["dog", "hotdog"], mode="text").show(photo)
    bars = [patch.get_width() for patch in plt.gcf().axes[1].patches]
    assert np.allclose(bars, _reference_probs(model, photo), atol=2e-3)
    plt.close("all")


def _calibration(temperature: float, threshold: float) -> Calibration:
    return Calibration(temperature=temperature, threshold=threshold, target_accuracy=0.99, ece_before=0.1,
                       ece_after=0.05, n=10)


def test_photo_tester_uses_calibrated_probabilities_and_says_unsure_below_the_threshold(model, learner_folder):
    plt.close("all")
    # Photos the model is not on the fence about (a temperature hardly moves a 50/50 answer), of both answers.
    sure = [p for p in _photos(learner_folder) if _reference_probs(model, p).max() > 0.6]
    assert len({int(_reference_probs(model, p).argmax()) for p in sure}) == 2
    for photo in sure[::4]:
        plain, calibrated = _reference_probs(model, photo), _reference_probs(model, photo, temperature=0.5)
        assert np.abs(calibrated - plain).max() > 0.02  # the temperature really changes them
        top, best = calibrated.max(), ["dog", "hotdog"][int(calibrated.argmax())]
        for threshold in (top - 0.005, top + 0.005):
            tester = PhotoTester(model, ["dog", "hotdog"], calibration=_calibration(0.5, threshold))
            tester.test_path(photo)
            assert np.allclose(list(tester.prediction.probabilities.values()), calibrated, atol=2e-3)
            html = tester.result_html()
            if threshold > top:
                assert f"unsure (maybe {best}, {top:.1%})" in html
            else:
                assert "unsure" not in html and f"<b>{best} ({top:.1%})</b>" in html
            figure = tester.figure(tester.prediction)  # the text-mode fallback says the same
            assert figure.axes[1].get_title().startswith("unsure" if threshold > top else best)
            plt.close("all")


def test_photo_tester_takes_the_calibration_from_a_checkpoint(model, learner_folder, output_dir):
    calibration = _calibration(0.5, 0.99)
    path = save_checkpoint(output_dir / "calibrated.pt", model, ["dog", "hotdog"],
                           extra={"calibration": calibration.to_dict()})
    assert PhotoTester(path).calibration == calibration
    assert PhotoTester(save_checkpoint(output_dir / "plain.pt", model, ["dog", "hotdog"])).calibration is None
    photo = _photos(learner_folder)[2]
    prediction = PhotoTester(path).predict(photo)
    assert np.allclose(list(prediction.probabilities.values()), _reference_probs(model, photo, 0.5), atol=2e-3)
    assert prediction.verdict.unsure  # an untrained head is never 99% sure


def test_gradcam_section_shows_gradcams_map_and_leaves_the_model_as_it_was(model, learner_folder):
    photo = _photos(learner_folder)[PER_CLASS]
    frozen = copy.deepcopy(model).freeze().train()  # as during lesson 3's training: head in train mode
    flags = [p.requires_grad for p in frozen.parameters()]
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    tester = PhotoTester(frozen, ["dog", "hotdog"], gradcam=True)
    tester.test_path(photo)
    assert frozen.training and not frozen.backbone.training and frozen.frozen
    assert [p.requires_grad for p in frozen.parameters()] == flags
    assert all(p.grad is None for p in frozen.parameters())
    assert all(torch.equal(v, before[k]) for k, v in frozen.state_dict().items())

    x = _reference_input(photo)
    predicted = int(np.argmax(_reference_logits(frozen.eval(), photo)))
    reference = upsample(GradCAM(frozen)(x, target=predicted), (224, 224))[0].numpy()
    assert reference.max() == 1 and (reference < 0.5).mean() > 0.2  # a map with a shape, not a constant
    assert tester.prediction.heatmap.shape == reference.shape == tester.prediction.seen.size[::-1]
    assert np.allclose(tester.prediction.heatmap, reference, atol=1e-4)
    assert 'class="tlcourse-gradcam"' in tester.result_html()


def test_gradcam_is_computed_only_when_its_section_is_shown(model, learner_folder):
    photo = _photos(learner_folder)[0]
    tester = PhotoTester(model, ["dog", "hotdog"])
    prediction = tester.test_path(photo)
    assert prediction.heatmap is None and "tlcourse-gradcam" not in tester.result_html()
    tester.sections.append(gradcam_section)  # what a learner may do by hand
    assert tester.test_path(photo).heatmap is not None and "tlcourse-gradcam" in tester.result_html()


# --------------------------------------------------------------------------- augmentation explorer
def test_default_augmentation_is_the_training_transform():
    settings = TransformSettings()
    assert repr(AugmentSettings().transform(settings)) == repr(train_transform(settings))


def test_explorer_starts_from_the_recipes_augmentation(learner_folder):
    """Issue 20, acceptance 3: the explorer's defaults are the settings the recipe trains its views with."""
    import inspect

    from tlcourse import augcache, recipes

    explorer = AugmentationExplorer(_photos(learner_folder)[0], n=1, mode="text")
    recipe = inspect.signature(recipes.train_frozen).parameters["augment_settings"].default
    assert explorer.augmentation == recipe == AugmentSettings()
    assert inspect.signature(augcache.augmented_features).parameters["augment"].default == recipe
    assert (recipe.scale, recipe.flip, recipe.downscale_p, recipe.downscale) == ((0.25, 1.0), 0.5, 0.5, (0.3, 0.7))
    assert (recipe.brightness, recipe.contrast, recipe.saturation) == (0.3, 0.3, 0.3)
    for line in ("v2.RandomApply([Downscale(factor=(0.3, 0.7))], p=0.5)",
                 "v2.RandomResizedCrop(224, scale=(0.25, 1.0), ratio=(0.75, 1.3333333333333333), antialias=True)",
                 "v2.RandomHorizontalFlip(0.5)", "v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3)"):
        assert line in explorer.code


@pytest.mark.parametrize("augment", [{}, {"downscale_p": 1.0, "flip": 1.0, "scale": (0.5, 0.6)},
                                     {"downscale_p": 0.2, "brightness": 0.0, "contrast": 0.0, "saturation": 0.9}])
def test_explorer_transform_draws_the_cached_views(learner_folder, augment):
    """The code text describes exactly the views the recipe caches: seeded alike, they are the same tensor.
    (A part switched off entirely leaves the code text, so it then draws one random number fewer.)"""
    from tlcourse.augcache import augmented_view, view_seed

    settings = TransformSettings(resize=36, crop=32)
    augmentation = AugmentSettings(**augment)
    transform = AugmentationExplorer(_photos(learner_folder)[0], settings, augmentation, n=1, mode="text").transform
    image = load_image(_photos(learner_folder)[0])
    for view in range(4):
        torch.manual_seed(view_seed("ab" * 32, view, augmentation))
        assert torch.equal(transform(image), augmented_view(image, "ab" * 32, view, augmentation, settings))


def test_augmentation_code_is_the_exact_transform(learner_folder):
    settings = TransformSettings()
    augmentation = AugmentSettings(scale=(0.2, 0.9), flip=1.0, brightness=0.3, contrast=0.2, saturation=0.1,
                                   downscale_p=0.7, downscale=(0.1, 0.5))
    built = augmentation.transform(settings)
    copied = eval(augmentation.code(settings), {"v2": v2, "torch": torch, "Downscale": Downscale})  # pasted
    assert repr(copied) == repr(built)
    photo = load_image(_photos(learner_folder)[0])
    torch.manual_seed(5)
    a = built(photo)
    torch.manual_seed(5)
    assert torch.equal(copied(photo), a)


def test_explorer_sliders_redraw_the_grid(learner_folder):
    photo = _photos(learner_folder)[0]
    settings = TransformSettings()
    explorer = AugmentationExplorer(photo, settings, n=4, columns=2)
    explorer.build()
    first = explorer.image.value
    assert _decode(first).size == (2 * 224 + 4, 2 * 224 + 4)

    # The tiles are the transform's outputs for the seed, de-normalised: check one against torchvision.
    torch.manual_seed(explorer.seed)
    expected = train_transform(settings)(load_image(photo))
    tile = torch.from_numpy(np.array(explorer.tiles[0])).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor(settings.mean).view(3, 1, 1), torch.tensor(settings.std).view(3, 1, 1)
    assert (tile - (expected * std + mean).clamp(0, 1)).abs().max() <= 1 / 255 + 1e-6

    rng_before = torch.get_rng_state()
    explorer.scale_slider.value = (0.05, 0.1)  # tiny crops: zoomed in
    assert explorer.augmentation.scale == (0.05, 0.1)
    assert explorer.image.value != first
    assert "scale=(0.05, 0.1)" in explorer.code_view.value

    def sharpness(tiles):  # mean absolute difference between neighbouring pixels
        arrays = [np.asarray(t, dtype=np.float32) for t in tiles]
        return float(np.mean([np.abs(np.diff(a, axis=1)).mean() for a in arrays]))

    explorer.scale_slider.value = (0.9, 1.0)
    explorer.downscale_slider.value = 0.0
    assert "Downscale" not in explorer.code.split("transform =")[1]
    sharp = sharpness(explorer.tiles)
    explorer.factor_slider.value = (0.1, 0.15)
    explorer.downscale_slider.value = 1.0  # always a photo a tenth of its size, blown up again: blurred
    assert sharpness(explorer.tiles) < 0.5 * sharp
    assert "v2.RandomApply([Downscale(factor=(0.1, 0.15))], p=1.0)" in explorer.code_view.value

    explorer.flip_box.value = False
    assert "RandomHorizontalFlip" not in explorer.code and "RandomHorizontalFlip" not in repr(explorer.transform)
    explorer.jitter_slider.value = 0.4
    assert "v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)" in explorer.code

    before = explorer.image.value
    explorer.redraw_button.click()
    assert explorer.seed == 1 and explorer.image.value != before
    assert torch.equal(torch.get_rng_state(), rng_before)  # the learner's random state is untouched


def test_explorer_photo_menu_shows_the_chosen_photo(learner_folder):
    photos = _photos(learner_folder)[:3]
    settings = TransformSettings()
    explorer = AugmentationExplorer(photos, settings, n=4, columns=2)
    explorer.build()
    assert [value for _, value in explorer.photo_menu.options] == [str(p) for p in photos]
    first = explorer.image.value
    explorer.photo_menu.value = str(photos[2])
    assert explorer.photo_path == photos[2] and explorer.image.value != first
    # The tiles are now the third photo's: the first tile against torchvision's transform of it.
    torch.manual_seed(explorer.seed)
    expected = train_transform(settings)(load_image(photos[2]))
    tile = torch.from_numpy(np.array(explorer.tiles[0])).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor(settings.mean).view(3, 1, 1), torch.tensor(settings.std).view(3, 1, 1)
    assert (tile - (expected * std + mean).clamp(0, 1)).abs().max() <= 1 / 255 + 1e-6


def test_explorer_fallback_draws_the_grid_and_prints_the_code(learner_folder, capsys):
    plt.close("all")
    explorer = AugmentationExplorer(_photos(learner_folder)[:2], n=4, mode="text")
    explorer.show()
    assert sum(bool(ax.images) for ax in plt.gcf().axes) == 4
    assert "v2.RandomResizedCrop(224, scale=(0.25, 1.0), ratio=(0.75, 1.3333333333333333), antialias=True)" in \
        capsys.readouterr().out
    plt.close("all")


# --------------------------------------------------------------------------- mistakes browser
def _results(learner_folder: Path) -> pd.DataFrame:
    """Hand-made predictions for real photos: P(hotdog) = 1/(n+1) ... n/(n+1), shuffled with a seed
    (so some are mistakes of each kind)."""
    table = scan_folder(learner_folder)
    n = len(table)
    p_hotdog = np.random.default_rng(0).permutation(np.arange(1, n + 1)) / (n + 1)
    return pd.DataFrame({"label": table["label"], "pred": (p_hotdog > 0.5).astype(int),
                         "prob_0": 1 - p_hotdog, "prob_1": p_hotdog, "file_path": table["file_path"]})


def test_browser_sorts_by_loss_and_confidence(learner_folder, tmp_path):
    results = _results(learner_folder)
    p_true = np.where(results["label"] == 1, results["prob_1"], results["prob_0"])
    browser = MistakesBrowser(results, ["dog", "hotdog"], exclusions=tmp_path / EXCLUSIONS_FILE)
    by_loss = np.argsort(np.log(p_true), kind="stable")  # highest -log p first
    assert list(browser.view.index) == list(by_loss)
    assert np.allclose(browser.view["loss"], -np.log(p_true[by_loss]))
    browser.set_sort("confidence")
    confidence = np.maximum(results["prob_0"], results["prob_1"]).to_numpy()
    assert list(browser.view["confidence"]) == sorted(confidence)
    # Which rows moved, not only the values: least confident first, ties (P(hotdog) = p and 1 - p give the
    # same confidence) in the results' own order.
    expected = sorted(range(len(confidence)), key=lambda i: (confidence[i], i))
    assert list(browser.view.index) == expected
    assert list(browser.view["file_path"]) == [results["file_path"][i] for i in expected]


def test_browser_sort_menu_reorders_the_rows(learner_folder, tmp_path):
    results = _results(learner_folder)
    browser = MistakesBrowser(results, ["dog", "hotdog"], exclusions=tmp_path / EXCLUSIONS_FILE)
    browser.build()
    by_loss = list(browser.view.index)
    confidence = np.maximum(results["prob_0"], results["prob_1"]).to_numpy()
    browser.sort_menu.value = "confidence"  # what choosing "least confident first" does
    assert browser.sort == "confidence"
    assert list(browser.view.index) == sorted(range(len(confidence)), key=lambda i: (confidence[i], i))
    assert list(browser.view.index) != by_loss and browser.index == 0
    assert Path(results["file_path"][browser.view.index[0]]).name in browser.info.value  # the first shown
    browser.sort_menu.value = "loss"
    assert list(browser.view.index) == by_loss


def test_browser_steps_and_filters_with_its_buttons(learner_folder, tmp_path):
    results = _results(learner_folder)
    browser = MistakesBrowser(results, ["dog", "hotdog"], exclusions=tmp_path / EXCLUSIONS_FILE)
    browser.build()
    n = len(results)
    assert browser.position.value == f"1 / {n}" and browser.previous_button.disabled
    worst = browser.current
    assert "WRONG" in browser.info.value and Path(worst["file_path"]).name in browser.info.value
    shown = _decode(browser.image.value)
    photo = load_image(worst["file_path"])
    assert max(shown.size) == 360 and abs(shown.size[0] / shown.size[1] - photo.size[0] / photo.size[1]) < 0.02

    browser.next_button.click()
    assert browser.position.value == f"2 / {n}" and browser.current["file_path"] != worst["file_path"]
    browser.previous_button.click()
    assert browser.current["file_path"] == worst["file_path"]
    for _ in range(n + 3):
        browser.next_button.click()
    assert browser.position.value == f"{n} / {n}" and browser.next_button.disabled

    browser.true_menu.value = "dog"
    browser.pred_menu.value = "hotdog"  # dogs called hotdogs: the mistakes of one kind
    expected = results[(results["label"] == 0) & (results["pred"] == 1)]
    assert len(browser.view) == len(expected) > 0 and set(browser.view["file_path"]) == set(expected["file_path"])
    assert browser.position.value == f"1 / {len(expected)}"
    assert browser.true_menu.label == "dog" and browser.pred_menu.label == "hotdog"
    browser.true_menu.value = ""  # "any"
    browser.pred_menu.value = ""
    assert len(browser.view) == n and browser.true_menu.label == "any"

    # A filter that leaves nothing: no mistakes of that kind.
    right = results.assign(pred=results["label"], prob_0=1.0 - results["label"], prob_1=results["label"] * 1.0)
    browser = MistakesBrowser(right, ["dog", "hotdog"], exclusions=tmp_path / EXCLUSIONS_FILE)
    browser.build()
    browser.true_menu.value = "dog"
    browser.pred_menu.value = "hotdog"
    assert len(browser.view) == 0 and browser.position.value == "no photos match this filter"
    assert browser.next_button.disabled and browser.mark_button.disabled and browser.current is None


def test_browser_from_a_folder_predicts_every_photo(model, learner_folder, tmp_path):
    browser = MistakesBrowser.from_folder(model, learner_folder, ["dog", "hotdog"],
                                          exclusions=tmp_path / EXCLUSIONS_FILE)
    assert len(browser.results) == 2 * PER_CLASS
    row = browser.results.iloc[-1]
    assert row["label"] == (1 if "/hotdog/" in row["file_path"] else 0)
    assert np.allclose([row["prob_0"], row["prob_1"]], _reference_probs(model, Path(row["file_path"])), atol=2e-3)
    with pytest.raises(ValueError, match="cat"):
        MistakesBrowser.from_folder(model, learner_folder, ["cat", "dog"])


def test_browser_from_a_folder_of_one_class(model, learner_folder, tmp_path):
    # A field test may hold photos of only some classes: labels still follow the model's classes.
    one_class = tmp_path / "field" / "hotdog"
    one_class.parent.mkdir()
    one_class.symlink_to(learner_folder / "hotdog", target_is_directory=True)
    browser = MistakesBrowser.from_folder(model, one_class.parent, ["dog", "hotdog"])
    assert len(browser.results) == PER_CLASS
    assert set(browser.results["label"]) == {1}


def test_browser_fallback_prints_a_table(learner_folder, tmp_path, capsys):
    plt.close("all")
    browser = MistakesBrowser(_results(learner_folder), ["dog", "hotdog"], mode="text")
    browser.show(n=3)
    out = capsys.readouterr().out
    assert f"{2 * PER_CLASS} photo(s), highest loss first" in out
    assert Path(browser.view.iloc[0]["file_path"]).name in out
    assert len(plt.gcf().axes) == 3
    plt.close("all")


# --------------------------------------------------------------------------- exclusion list
def test_marking_unmarking_and_reloading_leave_the_photos_untouched(model, learner_folder, output_dir):
    before = _checksums(learner_folder)
    settings = model.transform_settings
    excluded_csv = get_config().excluded_csv
    assert excluded_csv == output_dir / EXCLUSIONS_FILE  # in the output folder, never in the photo folder
    plain = load_course_data(learner_folder, settings)
    browser = MistakesBrowser(_results(learner_folder), ["dog", "hotdog"], exclusions=excluded_csv)
    browser.build()

    # Mark the worst photo and the next one, from the browser's buttons.
    marked = []
    for _ in range(2):
        browser.reason_menu.value = "not a photo of the class"
        browser.mark_button.click()
        marked.append(browser.current["file_path"])
        assert "left out of the data: not a photo of the class" in browser.info.value
        assert browser.mark_button.description.startswith("Unmark")
        browser.next_button.click()
    listed = pd.read_csv(excluded_csv)
    assert sorted(listed["file_path"]) == sorted(marked)
    assert set(listed["reason"]) == {"not a photo of the class"}

    # Reloading the data leaves exactly those out; every other photo keeps its part.
    with pytest.warns(ExcludedPhotosWarning, match="Left out 2 photo"):
        honoured = load_course_data(learner_folder, settings, exclusions=excluded_csv)
    for part in ("train", "val", "test"):
        kept, all_of_part = set(honoured.part(part)["file_path"]), set(plain.part(part)["file_path"])
        assert kept == all_of_part - set(marked)
    assert sum(len(honoured.part(p)) for p in ("train", "val", "test")) == 2 * PER_CLASS - 2

    # Unmark one from the browser (back to it), the other through the list itself.
    browser.previous_button.click()
    assert browser.current["file_path"] == marked[1]
    browser.mark_button.click()
    assert browser.mark_button.description.startswith("Mark") and "left out" not in browser.info.value
    assert ExclusionList(excluded_csv).unmark(marked[0]) and not ExclusionList(excluded_csv).unmark(marked[0])
    assert len(ExclusionList(excluded_csv)) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExcludedPhotosWarning)
        again = load_course_data(learner_folder, settings, exclusions=excluded_csv)
    for part in ("train", "val", "test"):
        assert list(again.part(part)["file_path"]) == list(plain.part(part)["file_path"])

    # Nothing in the learner's folder changed, nothing was added to it.
    assert _checksums(learner_folder) == before


def test_exclusion_list_errors_name_the_file(tmp_path, learner_folder):
    listing = ExclusionList(tmp_path / "excluded.csv")
    with pytest.raises(FileNotFoundError, match="no such photo"):
        listing.mark(tmp_path / "gone.jpg")
    with pytest.raises(ValueError, match=r"\.csv"):
        ExclusionList(tmp_path / "photo.jpg")
    (tmp_path / "excluded.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="excluded.csv has no file_path column"):
        listing.paths()
    photo = _photos(learner_folder)[0]
    (tmp_path / "excluded.csv").unlink()
    listing.mark(photo, "wrong label", "dog")
    listing.mark(photo, "not a photo of the class", "dog")  # marking again updates the reason
    assert len(listing) == 1 and listing.reason(photo) == "not a photo of the class" and photo in listing


def test_tlcourse_train_leaves_out_the_marked_photos(learner_folder, output_dir, real_weights, tmp_path, capsys):
    from tlcourse import cli

    before = _checksums(learner_folder)
    listing = ExclusionList(get_config().excluded_csv)
    for photo in _photos(learner_folder)[:2]:
        listing.mark(photo)
    with pytest.warns(ExcludedPhotosWarning, match="Left out 2 photo"):
        code = cli.main(["train", str(learner_folder), "--epochs", "1", "--device", "cpu",
                         "--out", str(tmp_path / "model.pt")])
    err = capsys.readouterr().err
    assert code == 0, err
    sizes = [int(n) for n in re.search(r"split train (\d+), val (\d+), test (\d+)", err).groups()]
    assert sum(sizes) == 2 * PER_CLASS - 2
    assert _checksums(learner_folder) == before
