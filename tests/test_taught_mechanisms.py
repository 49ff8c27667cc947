"""Each mechanism a lesson writes out agrees with the package's tested version.

The lessons assert this themselves, on the photos they run on; these tests take each written-out
definition from the lesson's own cells (its imports and the ``def``/``class``, nothing else) and compare
it with the package on inputs the lesson does not try: both orientations and odd sizes, a short last
batch, several classes, BatchNorm modes after ``train()``. If a lesson's copy and the package drift
apart, this fails and names the mechanism.
"""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tlcourse.data
import tlcourse.evaluation
import tlcourse.models
import tlcourse.training
from tlcourse.models import build_model
from tlcourse.recipes import train_discriminative

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def lesson_code(notebook: str, *names: str) -> dict:
    """The namespace after running a lesson's imports and its definitions of ``names`` (nothing else).

    Imports that would replace one of ``names`` by the package's version are left out.
    """
    nb = nbformat.read(NOTEBOOKS / notebook, as_version=4)
    imports, definitions = [], {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines())
        for node in ast.parse(source).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                node.names = [a for a in node.names if (a.asname or a.name) not in names]
                if node.names:
                    imports.append(node)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
                definitions.setdefault(node.name, node)  # the first, teaching definition
    missing = set(names) - set(definitions)
    assert not missing, f"{notebook} no longer writes out {sorted(missing)}: update this test"
    module = ast.Module(body=imports + [definitions[n] for n in names], type_ignores=[])
    namespace: dict = {}
    exec(compile(module, f"<{notebook}>", "exec"), namespace)
    return namespace


# --------------------------------------------------------------------------- lesson 1
@pytest.mark.parametrize("size", [(500, 375), (375, 500), (300, 300), (225, 640), (641, 224)])
def test_lesson1_square_crop_and_image_to_tensor(size):
    ns = lesson_code("01_data.ipynb", "SquareCrop", "ImageToTensor")
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    for random in (False, True):
        np.random.seed(1)
        ours = ns["ImageToTensor"]()(ns["SquareCrop"](224, random)(photo))
        np.random.seed(1)
        package = tlcourse.data.ImageToTensor()(tlcourse.data.SquareCrop(224, random)(photo))
        assert ours.shape == (3, 224, 224) and torch.equal(ours, package), (size, random)


def test_lesson1_create_csv(tmp_path):
    ns = lesson_code("01_data.ipynb", "create_csv")
    root = tmp_path / "photos"
    for name, count in (("zèbre", 2), ("a cat", 3), ("b", 1)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (40, 30), (i * 40, 0, 0)).save(root / name / f"p {i}.jpg")
    ours = ns["create_csv"](root, tmp_path / "ours.csv")
    package = tlcourse.data.create_csv(root, tmp_path / "package.csv")
    ours_rows = sorted(zip(ours["file_path"], ours["label"], ours["class_name"]))
    package_rows = sorted(zip(package["file_path"], package["label"], package["class_name"]))
    assert ours_rows == package_rows and len(ours_rows) == 6


# --------------------------------------------------------------------------- lesson 2
def test_lesson2_vgg_classifier_equals_build_model():
    ns = lesson_code("02_feature_extractor.ipynb", "VGGClassifier")
    torch.manual_seed(0)
    package = build_model(3, "vgg11", weights=None).eval()
    ours = ns["VGGClassifier"](3).eval()
    ours.features.load_state_dict(package.backbone.features.state_dict())
    ours.head.load_state_dict(package.head.state_dict())
    x = torch.randn(2, 3, 96, 96)  # small and not 224: the adaptive pool makes any size work
    with torch.no_grad():
        assert torch.allclose(ours(x), package(x), rtol=1e-4, atol=1e-6)
    assert sum(p.numel() for p in ours.head.parameters()) == 512 * 7 * 7 * 3 + 3


# --------------------------------------------------------------------------- lesson 3
def _tiny_transfer_model(n_classes: int = 3) -> tlcourse.models.TransferClassifier:
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    return tlcourse.models.TransferClassifier(backbone, 4, n_classes)


def test_lesson3_freeze_sets_what_model_freeze_sets():
    ns = lesson_code("03_weight_freezing.ipynb", "freeze")
    ours, package = ns["freeze"](_tiny_transfer_model().train()), _tiny_transfer_model().train().freeze()
    assert [p.requires_grad for p in ours.parameters()] == [p.requires_grad for p in package.parameters()]
    assert [m.training for m in ours.modules()] == [m.training for m in package.modules()]
    assert not ours.backbone[1].training  # BatchNorm on its stored statistics


def test_lesson3_training_and_evaluation_loops_equal_fit_and_evaluate():
    ns = lesson_code("03_weight_freezing.ipynb", "train_one_epoch", "evaluate")
    torch.manual_seed(0)
    x, y = torch.randn(50, 16), torch.randint(0, 3, (50,))  # 50 = 3 batches of 16 and a last one of 2
    head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(16, 3))
    ours, package = copy.deepcopy(head), copy.deepcopy(head)
    loader = lambda: DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True,  # noqa: E731
                                generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    loss, acc = ns["train_one_epoch"](ours, loader(), torch.optim.AdamW(ours.parameters(), lr=0.1), torch.device("cpu"))
    torch.manual_seed(1)
    record = tlcourse.training.fit(package, loader(), torch.optim.AdamW(package.parameters(), lr=0.1), 1,
                                   keep_best=False).epochs[0]
    assert loss == pytest.approx(record["train_loss"], abs=1e-6) and acc == pytest.approx(record["train_acc"])
    for a, b in zip(ours.state_dict().values(), package.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    ours_eval = ns["evaluate"](ours, DataLoader(TensorDataset(x, y), batch_size=16), torch.device("cpu"))
    package_eval = tlcourse.training.evaluate(ours, DataLoader(TensorDataset(x, y), batch_size=16))
    assert ours_eval["loss"] == pytest.approx(package_eval["loss"], abs=1e-6)
    assert ours_eval["accuracy"] == package_eval["accuracy"] and ours_eval["n"] == 50


@pytest.mark.parametrize("correct,n", [(0, 1), (0, 8), (3, 8), (8, 8), (140, 144), (144, 144), (500, 1000)])
def test_lesson3_wilson_interval(correct, n):
    ns = lesson_code("03_weight_freezing.ipynb", "wilson_interval")
    assert ns["wilson_interval"](correct, n) == pytest.approx(tlcourse.evaluation.wilson_interval(correct, n), abs=1e-12)


# --------------------------------------------------------------------------- lesson 4
@pytest.mark.parametrize("update_batchnorm", [False, True])
def test_lesson4_unfreeze_sets_what_model_unfreeze_sets(update_batchnorm):
    ns = lesson_code("04_discriminative_lr.ipynb", "unfreeze")
    ours = ns["unfreeze"](_tiny_transfer_model().freeze(), update_batchnorm=update_batchnorm)
    package = _tiny_transfer_model().freeze().unfreeze(update_batchnorm=update_batchnorm)
    for model in (ours, package):
        model.train()  # as a training loop does
    assert [p.requires_grad for p in ours.parameters()] == [p.requires_grad for p in package.parameters()]
    assert [m.training for m in ours.modules()] == [m.training for m in package.modules()]
    assert ours.backbone[1].training == update_batchnorm


def test_lesson4_param_groups():
    ns = lesson_code("04_discriminative_lr.ipynb", "param_groups")
    for model in (_tiny_transfer_model(), _tiny_transfer_model().freeze()):
        ours, package = ns["param_groups"](model, 1e-3, 1e-5), tlcourse.models.param_groups(model, 1e-3, 1e-5)
        assert [(g["name"], g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in ours] == \
               [(g["name"], g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in package]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # trains on the real photos
def test_lesson4_fine_tuning_epoch_equals_train_discriminative(data_dir, one_torch_thread):
    """The lesson's loop with the optimizer it writes out ends with the recipe's weights (real photos)."""
    ns = lesson_code("04_discriminative_lr.ipynb", "fine_tune_one_epoch")
    model = build_model(2, "mobilenet_v2", weights=None)
    data = tlcourse.data.load_course_data(data_dir, model.transform_settings, seed=0, per_class=10)
    model.freeze()
    ours, package = copy.deepcopy(model).unfreeze(update_batchnorm=False), copy.deepcopy(model)
    optimizer = torch.optim.AdamW(tlcourse.models.param_groups(ours, 1e-4, 1e-5, weight_decay=0.01))
    torch.manual_seed(0)
    ns["fine_tune_one_epoch"](ours, data.loader("train", batch_size=8, augment=True, seed=0), optimizer,
                              torch.device("cpu"))
    train_discriminative(package, data, epochs=1, head_lr=1e-4, backbone_lr=1e-5, batch_size=8, seed=0)
    moved = max(float((a - b).abs().max()) for a, b in zip(ours.state_dict().values(), model.state_dict().values())
                if a.is_floating_point())
    assert moved > 0
    for (name, a), b in zip(ours.state_dict().items(), package.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


# --------------------------------------------------------------------------- lesson 6
def test_lesson6_range_test_agrees_with_the_package_also_when_the_loss_blows_up():
    import tlcourse.lr_finder

    ns = lesson_code("06_learning_rates.ipynb", "lr_range_test")
    ns["device"] = torch.device("cpu")  # the lesson's global
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=g), torch.randint(0, 3, (40,), generator=g)
    runs = []
    for version in (ns["lr_range_test"], tlcourse.lr_finder.lr_range_test):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        before = copy.deepcopy(net.state_dict())
        loader = DataLoader(TensorDataset(x, y), batch_size=16)  # 3 batches, the last short: repeated
        # SGD up to a huge rate: the loss blows up and both must stop at the same batch.
        out = version(net, loader, torch.optim.SGD(net.parameters(), lr=0.1), start_lr=1e-3, end_lr=1e4, steps=40)
        runs.append(out if isinstance(out, tuple) else (out.lrs, out.losses))
        assert all(torch.equal(a, b) for a, b in zip(before.values(), net.state_dict().values()))
    (ours_lrs, ours_losses), (package_lrs, package_losses) = runs
    assert len(ours_lrs) == len(package_lrs) < 40
    np.testing.assert_allclose(ours_lrs, package_lrs, rtol=1e-12)
    np.testing.assert_allclose(ours_losses, package_losses, rtol=1e-6)


@pytest.mark.parametrize("shape,k", [((50, 7), 3), ((6, 20), 2), ((30, 2), 1)])
def test_lesson6_pca_agrees_with_the_package(shape, k):
    import tlcourse.projection

    ns = lesson_code("06_learning_rates.ipynb", "pca")
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * torch.linspace(3, 0.5, shape[1]) + 2
    mean, directions, coordinates = ns["pca"](x, k)
    package = tlcourse.projection.pca(x, k)
    assert torch.allclose(mean, package.mean) and torch.allclose(directions, package.components, atol=1e-10)
    assert torch.allclose(coordinates, package.transform(x), atol=1e-8)


@pytest.mark.parametrize("total,pct", [(10, 0.3), (37, 0.25), (200, 0.5)])
def test_lesson6_cosine_solution_matches_torch_and_one_cycle_is_built_from_it(total, pct):
    """The lesson's solution to its coding exercise passes the checker; and, as the lesson says, PyTorch's
    one-cycle rises from a 25th of the maximum to the maximum over the first pct of the batches, then
    falls to almost zero, each along that half cosine wave."""
    from tlcourse.checkers.schedules import check_cosine_rate

    cosine_rate = solution("06_learning_rates.ipynb", "cosine_rate")
    assert check_cosine_rate(cosine_rate).startswith("Correct")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=total, pct_start=pct,
                                                    cycle_momentum=False)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    peak = pct * total - 1  # PyTorch's last batch of the warm-up
    start, end = 0.1 / 25, 0.1 / 25 / 1e4  # its defaults: div_factor=25, final_div_factor=1e4
    expected = [cosine_rate(peak - s, peak, 0.1, start) if s <= peak else cosine_rate(s - peak, total - 1 - peak, 0.1, end)
                for s in range(total)]
    np.testing.assert_allclose(rates, expected, rtol=1e-9)
    assert rates[0] == pytest.approx(start) and max(rates) == pytest.approx(0.1, rel=0.01) and rates[-1] < 1e-4 * 0.1


# --------------------------------------------------------------------------- lesson 5 and 6: coding exercises
def solution(notebook: str, name: str):
    """The function ``name`` as the lesson's collapsed solution (a ```python block in a markdown ``<details>``
    cell) writes it, defined after the lesson's imports."""
    nb = nbformat.read(NOTEBOOKS / notebook, as_version=4)
    blocks = [block for cell in nb.cells if cell.cell_type == "markdown" and "<details>" in cell.source
              for block in re.findall(r"```python\n(.*?)```", cell.source, flags=re.S) if f"def {name}(" in block]
    assert len(blocks) == 1, f"{notebook} should show one solution defining {name}, found {len(blocks)}"
    namespace = lesson_code(notebook)  # the lesson's imports only
    exec(compile(blocks[0], f"<{notebook} solution>", "exec"), namespace)
    return namespace[name]


def test_lesson5_confusion_solution_passes_its_checker_and_agrees_with_scikit_learn():
    from tlcourse.checkers.evaluation import check_confusion_counts

    metrics = pytest.importorskip("sklearn.metrics")
    confusion_counts = solution("05_evaluation.ipynb", "confusion_counts")
    assert check_confusion_counts(confusion_counts).startswith("Correct")
    g = np.random.default_rng(3)
    for k, n in ((2, 9), (3, 40), (6, 25)):  # with 6 classes and 25 photos, some classes have none
        labels, preds = g.integers(0, k, n), g.integers(0, k, n)
        np.testing.assert_array_equal(confusion_counts(labels, preds, k),
                                      metrics.confusion_matrix(labels, preds, labels=list(range(k))))


# --------------------------------------------------------------------------- lesson 7
@pytest.mark.parametrize("size,augment", [
    ((61, 143), {}),  # a tall, odd-sized photo with the recipe's settings
    ((150, 90), {"downscale_p": 1.0, "flip": 1.0, "scale": (0.5, 0.6)}),  # always downscaled and mirrored
    ((40, 40), {"downscale_p": 0.0, "brightness": 0.0, "contrast": 0.0, "saturation": 0.9}),
])
def test_lesson7_augmented_view_agrees_with_the_package(size, augment):
    import tlcourse.augcache

    ns = lesson_code("07_real_world.ipynb", "augmented_view")
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    settings = tlcourse.data.TransformSettings(resize=36, crop=32)
    augment = tlcourse.augcache.AugmentSettings(**augment)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    for view in range(6):
        ours = ns["augmented_view"](image, "ab" * 32, view, augment, settings)
        assert torch.equal(ours, tlcourse.augcache.augmented_view(image, "ab" * 32, view, augment, settings))
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random numbers are left alone


# --------------------------------------------------------------------------- lesson 8
def test_lesson8_expected_calibration_error_agrees_with_the_package():
    import tlcourse.calibration

    ns = lesson_code("08_confidence.ipynb", "expected_calibration_error")
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([0.5, 0.5, 0.5], size=200)
    probs[:10] = [0.6, 0.3, 0.1]  # confidences on a bin edge (9/15) and at 1
    probs[10:15] = [1.0, 0.0, 0.0]
    labels = rng.integers(0, 3, size=200)
    for n_bins in (15, 4, 1):
        assert abs(ns["expected_calibration_error"](probs, labels, n_bins)
                   - tlcourse.calibration.expected_calibration_error(probs, labels, n_bins)) < 1e-12


def test_lesson8_grad_cam_agrees_with_the_package():
    import tlcourse.gradcam

    ns = lesson_code("08_confidence.ipynb", "grad_cam")
    ns["device"] = torch.device("cpu")  # a lesson variable the function reads
    torch.manual_seed(0)
    model = build_model(3, "mobilenet_v2", weights=None).freeze()
    model.train()
    x = torch.randn(2, 3, 96, 96)
    for target in (None, 2, [1, 0]):
        ours = ns["grad_cam"](model, x, target)
        reference = tlcourse.gradcam.GradCAM(model)(x, target)
        assert reference.abs().max() > 0
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6 * float(reference.abs().max()))
    assert model.training and not model.backbone.training  # modes put back
