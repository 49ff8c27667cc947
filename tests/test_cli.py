"""The ``tlcourse`` command: help of every command, evaluate and predict against an independent
reference, clear errors, and (slow) train -> evaluate --json -> predict on the real photos."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image, ImageOps

from tlcourse import cli
from tlcourse.checkpoint import load_checkpoint, save_checkpoint
from tlcourse.models import build_model

COMMANDS = ["download-data", "prefetch-weights", "doctor", "train", "evaluate", "predict", "robustness", "grade"]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


# --------------------------------------------------------------------------- help
def test_the_issue_commands_are_all_there():
    assert sorted(subcommands()) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_clear_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: tlcourse {command}")
    parser = subcommands()[command]
    assert parser.description and len(parser.description) > 60  # says what the command does
    for action in parser._actions:  # every argument and option is explained
        assert action.help, f"{command}: {action.dest} has no help"


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in COMMANDS:
        assert command in text


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_runs_as_module_and_console_script(require):
    result = subprocess.run([sys.executable, "-m", "tlcourse", "--version"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("tlcourse ")
    script = Path(sys.executable).parent / "tlcourse"
    # CI installs the course with pip (make test), so there the console script must exist.
    require(script.exists(), f"The console script {script} (pip install -e .)")
    result = subprocess.run([str(script), "predict", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "usage: tlcourse predict" in result.stdout


# --------------------------------------------------------------------------- network timeouts
@pytest.mark.parametrize("args,expected", [([], 15.0), (["--timeout", "2.5"], 2.5)])
def test_download_data_timeout_reaches_the_download(monkeypatch, tmp_path, capsys, args, expected):
    import tlcourse.download

    seen = {}

    class Report:
        ok = True

        def summary(self) -> str:
            return "nothing to do"

    def fake_download(dest, field_test_dest, sets, **kwargs):
        seen.setdefault("sets", []).extend(sets)
        seen.update(kwargs, dest=dest)
        return {name: Report() for name in sets}

    monkeypatch.setattr(tlcourse.download, "download_sets", fake_download)
    assert cli.main(["download-data", "--dest", str(tmp_path / "data"), "--field-test-dest",
                     str(tmp_path / "field-test"), "--quiet", *args]) == 0
    assert seen["timeout"] == expected and seen["dest"] == str(tmp_path / "data")
    assert seen["sets"] == ["photos", "field-test"]  # both sets by default, each with the timeout


@pytest.mark.parametrize("args,expected", [([], 30.0), (["--timeout", "4"], 4.0)])
def test_prefetch_weights_timeout_reaches_the_download(monkeypatch, tmp_path, capsys, args, expected):
    import tlcourse.weights

    seen = {}

    def fake_prefetch(backbones, **kwargs):
        seen.update(kwargs, backbones=backbones)
        return [tlcourse.weights.WeightsResult("resnet18", tmp_path / "w.pth", "already cached", "0" * 64)]

    monkeypatch.setattr(tlcourse.weights, "prefetch_weights", fake_prefetch)
    assert cli.main(["prefetch-weights", "resnet18", "--quiet", *args]) == 0
    assert seen["timeout"] == expected and seen["backbones"] == ["resnet18"]
    assert "resnet18: already cached" in capsys.readouterr().out


# --------------------------------------------------------------------------- evaluate and predict (quick)
@pytest.fixture(scope="module")
def small_folder(tmp_path_factory, data_dir) -> Path:
    """6 real photos per class."""
    root = tmp_path_factory.mktemp("photos")
    for name in ("dog", "hotdog"):
        (root / name).mkdir()
        for path in sorted((data_dir / name).glob("*.jpg"))[:6]:
            shutil.copyfile(path, root / name / path.name)
    return root


def assert_answers_vary(probs: np.ndarray, margin: float = 1e-3) -> None:
    """A fixture model is useful as a reference only when its answers depend on the photo: it must
    predict more than one class, its probabilities must differ from photo to photo, and no photo may
    sit on a tie (float rounding between two implementations could flip it)."""
    predicted = probs.argmax(1)
    assert len(set(predicted.tolist())) > 1, f"the fixture model answers one class for every photo: {probs}"
    assert np.ptp(probs[:, 0]) > 0.1, f"the fixture model's probabilities hardly differ across photos: {probs}"
    top_two = np.sort(probs, axis=1)[:, -2:]
    assert (top_two[:, 1] - top_two[:, 0]).min() > margin, f"a photo sits on a tie: {probs}"


@pytest.fixture(scope="module")
def varied_checkpoint(tmp_path_factory, small_folder, real_weights) -> Path:
    """The pretrained MobileNetV2 (its features differ from photo to photo) with a random head whose bias
    puts the decision between the 6th and 7th of the 12 photos' logit differences: half the photos are
    called each class, with probabilities from 0.05 to 0.95, and none near a tie.

    Unlike an untrained backbone (features about 1e-8 on every photo, so one answer for all, even a blank
    image), its answers change when a photo changes: a test comparing it with a reference compares
    answers, not constants."""
    torch.manual_seed(0)
    model = build_model(2, "mobilenet_v2", weights="DEFAULT", offline=True)
    with torch.no_grad():
        model.head[-1].weight.normal_(0, 0.1)
        model.head[-1].bias.zero_()
    path = tmp_path_factory.mktemp("ckpt") / "varied.pt"
    save_checkpoint(path, model, ["dog", "hotdog"])
    probs = reference_probabilities(path, sorted(small_folder.rglob("*.jpg")))
    difference = np.sort(np.log(probs[:, 1]) - np.log(probs[:, 0]))  # hotdog logit minus dog logit
    middle = (difference[5] + difference[6]) / 2
    # Logits scaled so that the farthest photo is at 3 from the decision (probability 0.95): confident and
    # unsure answers both occur, and none is so sure that a change of the photo cannot move it.
    scale = 3.0 / max(difference[-1] - middle, middle - difference[0])
    with torch.no_grad():
        model.head[-1].weight.mul_(scale)
        model.head[-1].bias.copy_(torch.tensor([0.0, -middle * scale]))
    save_checkpoint(path, model, ["dog", "hotdog"])
    assert_answers_vary(reference_probabilities(path, sorted(small_folder.rglob("*.jpg"))))
    return path


def torchvision_model(checkpoint: Path) -> torch.nn.Module:
    """The checkpoint's network rebuilt without tlcourse: torchvision's own MobileNetV2 whose classifier is
    the head's last layer (dropout does nothing in eval mode), weights read with torch.load."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    net = torchvision.models.mobilenet_v2(weights=None)
    net.classifier = torch.nn.Linear(state["head.2.weight"].shape[1], state["head.2.weight"].shape[0])
    weights = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    weights.update({"classifier.weight": state["head.2.weight"], "classifier.bias": state["head.2.bias"]})
    net.load_state_dict(weights)  # strict: every tensor of the checkpoint has its place
    return net.eval()


#: torchvision's own evaluation transform of the ImageNet weights (resize 232, crop 224, normalise), not tlcourse's.
REFERENCE_TRANSFORM = torchvision.models.MobileNet_V2_Weights.DEFAULT.transforms()


def reference_probabilities(checkpoint: Path, images: list, change=None) -> np.ndarray:
    """Probabilities computed independently of the CLI and of tlcourse: torchvision's model and transforms
    built here, one image at a time. ``images``: paths or PIL images; ``change``: applied to each decoded
    photo before the transform."""
    model = torchvision_model(checkpoint)
    rows = []
    with torch.no_grad():
        for image in images:
            image = image if isinstance(image, Image.Image) else ImageOps.exif_transpose(Image.open(image)).convert("RGB")
            x = REFERENCE_TRANSFORM(change(image) if change else image).unsqueeze(0)
            rows.append(torch.softmax(model(x), dim=1)[0].numpy())
    return np.stack(rows)


def labels_of(images: list[Path]) -> np.ndarray:
    return np.array([["dog", "hotdog"].index(p.parent.name) for p in images])


def test_evaluate_json_matches_an_independent_reference(small_folder, varied_checkpoint, capsys):
    images = sorted(small_folder.rglob("*.jpg"))
    labels = labels_of(images)
    probs = reference_probabilities(varied_checkpoint, images)
    preds = probs.argmax(1)

    assert cli.main(["evaluate", str(varied_checkpoint), str(small_folder), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # stdout holds exactly one JSON object
    assert result["n"] == len(images) == 12
    expected = [[int(((labels == t) & (preds == p)).sum()) for p in (0, 1)] for t in (0, 1)]
    assert result["confusion_matrix"] == expected, "evaluate's answers differ from the reference model's"
    assert result["accuracy"] == pytest.approx(float((preds == labels).mean()))
    for k, name in enumerate(["dog", "hotdog"]):
        assert result["per_class"][name] == pytest.approx(float((preds[labels == k] == k).mean()))
    assert result["class_names"] == ["dog", "hotdog"]
    # Each mistake with the reference's probability of the predicted class: photo by photo, not only counts.
    wrong = {str(images[i]): float(probs[i, preds[i]]) for i in np.flatnonzero(preds != labels)}
    assert {m["file"]: pytest.approx(m["probability"], abs=1e-4) for m in result["mistakes"]} == wrong


@pytest.fixture
def loader_batch_sizes(monkeypatch) -> list[int]:
    """Records the batch size of every loader tlcourse.data.make_loader builds (evaluate imports it on call)."""
    import tlcourse.data
    import tlcourse.robustness

    sizes, make_loader = [], tlcourse.data.make_loader

    def recording(*args, **kwargs):
        loader = make_loader(*args, **kwargs)
        sizes.append(loader.batch_size)
        return loader

    monkeypatch.setattr(tlcourse.data, "make_loader", recording)
    monkeypatch.setattr(tlcourse.robustness, "make_loader", recording)  # imported by name there
    return sizes


def test_evaluate_batch_size_reaches_the_loader_and_keeps_the_answers(small_folder, varied_checkpoint, capsys,
                                                                      loader_batch_sizes):
    assert cli.main(["evaluate", str(varied_checkpoint), str(small_folder), "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert cli.main(["evaluate", str(varied_checkpoint), str(small_folder), "--json", "--batch-size", "5"]) == 0
    batched = json.loads(capsys.readouterr().out)  # 5 + 5 + 2: a last short batch
    assert loader_batch_sizes == [64, 5]  # the documented default, then the option
    assert batched["confusion_matrix"] == default["confusion_matrix"]
    assert [m["file"] for m in batched["mistakes"]] == [m["file"] for m in default["mistakes"]]
    for a, b in zip(batched["mistakes"], default["mistakes"]):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


def test_evaluate_prints_accuracy_per_class_and_confusion_matrix(small_folder, varied_checkpoint, capsys):
    assert cli.main(["evaluate", str(varied_checkpoint), str(small_folder)]) == 0
    out = capsys.readouterr().out
    assert "accuracy:" in out and "per-class accuracy:" in out and "confusion matrix" in out
    assert "dog:" in out and "hotdog:" in out and "(6 photos)" in out


def test_evaluate_a_folder_with_some_of_the_classes(tmp_path, small_folder, varied_checkpoint, capsys):
    only = tmp_path / "only"
    shutil.copytree(small_folder / "hotdog", only / "hotdog")
    assert cli.main(["evaluate", str(varied_checkpoint), str(only), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 6 and result["per_class"]["dog"] is None
    assert result["per_class"]["hotdog"] == result["accuracy"]
    assert result["confusion_matrix"][0] == [0, 0]  # no dogs: labels follow the checkpoint, not the folder


def test_evaluate_refuses_other_class_names(tmp_path, small_folder, varied_checkpoint, capsys):
    other = tmp_path / "other"
    shutil.copytree(small_folder / "dog", other / "dog")
    shutil.copytree(small_folder / "hotdog", other / "cat")
    assert cli.main(["evaluate", str(varied_checkpoint), str(other)]) == 1
    err = capsys.readouterr().err
    assert "['cat']" in err and "['dog', 'hotdog']" in err


def test_evaluate_missing_checkpoint(tmp_path, small_folder, capsys):
    assert cli.main(["evaluate", str(tmp_path / "none.pt"), str(small_folder)]) == 1
    assert "Checkpoint not found" in capsys.readouterr().err


def test_predict_matches_the_reference(small_folder, varied_checkpoint, capsys):
    images = sorted(small_folder.rglob("*.jpg"))[::3]
    probs = reference_probabilities(varied_checkpoint, images)
    assert cli.main(["predict", str(varied_checkpoint), *map(str, images), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == [str(p) for p in images]
    for result, p in zip(results, probs):
        assert result["class"] == ["dog", "hotdog"][int(p.argmax())]
        assert result["probability"] == pytest.approx(float(p.max()), abs=1e-4)
        assert sum(result["probabilities"].values()) == pytest.approx(1.0)
    assert cli.main(["predict", str(varied_checkpoint), str(images[0])]) == 0
    path, name, prob = capsys.readouterr().out.strip().split("\t")
    assert (path, name) == (str(images[0]), results[0]["class"]) and float(prob) == pytest.approx(
        results[0]["probability"], abs=1e-4)


def test_predict_threshold_answers_unsure_with_a_best_guess_column(small_folder, varied_checkpoint, capsys):
    images = sorted(small_folder.rglob("*.jpg"))
    probs = reference_probabilities(varied_checkpoint, images)
    top = probs.max(1)  # no calibration stored: the plain softmax
    ordered = np.sort(top)
    gap = max(range(2, 9), key=lambda i: ordered[i + 1] - ordered[i])  # a threshold far from every photo
    threshold = float((ordered[gap] + ordered[gap + 1]) / 2)
    unsure = top < threshold
    assert 0 < unsure.sum() < len(images) and ordered[gap + 1] - ordered[gap] > 1e-3

    assert cli.main(["predict", str(varied_checkpoint), *map(str, images), "--threshold", str(threshold)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(images)
    for line, expect_unsure, p in zip(lines, unsure, probs):
        columns = line.split("\t")
        best = ["dog", "hotdog"][int(p.argmax())]
        if expect_unsure:  # below the threshold: "unsure", then a 4th column with the best guess
            assert columns[1:2] == ["unsure"] and columns[3:] == [f"best guess {best}"], line
        else:
            assert columns[1] == best and len(columns) == 3, line
        assert float(columns[2]) == pytest.approx(float(p.max()), abs=1e-4)
    assert cli.main(["predict", str(varied_checkpoint), *map(str, images), "--threshold", str(threshold), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["unsure"] for r in results] == unsure.tolist()
    assert all(r["threshold"] == pytest.approx(threshold) and r["temperature"] == 1.0 for r in results)


def test_predict_names_a_missing_or_broken_image(tmp_path, small_folder, varied_checkpoint, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    good = next(small_folder.rglob("*.jpg"))
    code = cli.main(["predict", str(varied_checkpoint), str(tmp_path / "missing.jpg"), str(broken), str(good)])
    captured = capsys.readouterr()
    assert code == 1
    assert "missing.jpg" in captured.err and "broken.jpg" in captured.err
    assert str(good) in captured.out  # the readable one is still answered


def test_train_on_a_missing_folder_says_how_to_get_data(tmp_path, capsys):
    assert cli.main(["train", str(tmp_path / "nothing")]) == 1
    assert "tlcourse download-data" in capsys.readouterr().err


# --------------------------------------------------------------------------- train options (a few real photos)
def train(capsys, *args) -> tuple[str, str]:
    """``tlcourse train`` in this process (quick: torch is already imported); returns (stdout, stderr)."""
    code = cli.main(["train", *map(str, args), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out, captured.err


def payload_of(checkpoint: Path) -> dict:
    """A checkpoint's contents read with torch.load (not the package's loader)."""
    return torch.load(checkpoint, map_location="cpu", weights_only=True)


@pytest.fixture
def optimizers_made(monkeypatch) -> list[list[tuple[str | None, float]]]:
    """Records, for every AdamW the recipes create, each parameter group's (name, learning rate)."""
    made = []

    class RecordingAdamW(torch.optim.AdamW):
        def __init__(self, params, *args, **kwargs):
            super().__init__(params, *args, **kwargs)
            made.append([(group.get("name"), group["lr"]) for group in self.param_groups])

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    return made


def test_train_freeze_with_lr_and_per_class(small_folder, real_weights, output_dir, tmp_path, capsys,
                                            optimizers_made):
    checkpoint = tmp_path / "freeze.pt"
    stdout, stderr = train(capsys, small_folder, "--per-class", 4, "--lr", 0.0123, "--epochs", 2,
                           "--out", checkpoint)
    assert optimizers_made == [[(None, 0.0123)]]  # one optimizer, for the head, at --lr
    # --per-class 4 of the folder's 6 per class: 8 photos; per class 1 validation, 1 test, 2 training photos.
    assert "8 photos of dog, hotdog; split train 4, val 2, test 2" in stderr
    assert "validation accuracy:" in stdout and "(2 photos)" in stdout.split("validation accuracy:")[1].split("\n")[0]
    payload = payload_of(checkpoint)
    assert payload["extra"]["per_class"] == 4 and payload["extra"]["method"] == "freeze"
    assert len(payload["history"]["epochs"]) == 2
    # Weight freezing: the backbone is still exactly the pretrained file.
    pretrained = torch.load(real_weights, map_location="cpu", weights_only=True)
    backbone = {k.removeprefix("backbone."): v for k, v in payload["state_dict"].items() if k.startswith("backbone.")}
    assert backbone and all(torch.equal(v, pretrained[k]) for k, v in backbone.items())


@pytest.fixture
def train_frozen_calls(monkeypatch) -> list[dict]:
    """Records the keyword arguments of every train_frozen call (the CLI imports it when it runs)."""
    import tlcourse.recipes

    calls, original = [], tlcourse.recipes.train_frozen

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(tlcourse.recipes, "train_frozen", recording)
    return calls


@pytest.fixture(scope="module")
def folder_of_20(tmp_path_factory, data_dir) -> Path:
    """20 real photos per class: 2 per class for validation (80/10/10)."""
    root = tmp_path_factory.mktemp("photos20")
    for name in ("dog", "hotdog"):
        (root / name).mkdir()
        for path in sorted((data_dir / name).glob("*.jpg"))[:20]:
            shutil.copyfile(path, root / name / path.name)
    return root


def test_train_stores_the_calibration_fitted_on_validation(folder_of_20, real_weights, output_dir, tmp_path, capsys,
                                                           train_frozen_calls, one_torch_thread):
    """After train: the validation logits recomputed here (torchvision's model and transform, not tlcourse's),
    then the stored temperature, threshold and count against a reference fit; predict's "unsure" at the
    stored threshold, on both sides of a photo's calibrated confidence."""
    from scipy.optimize import minimize_scalar

    from tlcourse.data import load_course_data

    checkpoint = tmp_path / "calibrated.pt"
    # A barely trained head (1 epoch at a small rate) makes mistakes on validation: a temperature to fit.
    train(capsys, folder_of_20, "--epochs", 1, "--lr", 1e-4, "--views", 0, "--batch-size", 3, "--out", checkpoint)
    assert [(c["views"], c["batch_size"]) for c in train_frozen_calls] == [(0, 3)]  # the options reach the recipe
    extra = payload_of(checkpoint)["extra"]
    assert extra["views"] == 0
    assert extra.get("calibration"), f"tlcourse train stored no calibration in the checkpoint: {sorted(extra)}"
    stored = extra["calibration"]

    val = load_course_data(folder_of_20, seed=0).part("val")
    paths, labels = list(val["file_path"]), torch.tensor(val["label"].to_numpy())
    logits = torch.log(torch.from_numpy(reference_probabilities(checkpoint, paths))).double()  # up to a constant
    assert stored["n"] == len(paths) == 4
    right = logits.argmax(1) == labels
    assert 0 < right.sum() < len(right), "validation answers all right or all wrong: the threshold rule is untested"
    fit = minimize_scalar(lambda t: torch.nn.functional.cross_entropy(logits / t, labels).item(),
                          bounds=(0.1, 10.0), method="bounded", options={"xatol": 1e-6})
    assert stored["temperature"] == pytest.approx(float(fit.x), rel=1e-3)  # (fit_temperature's own tests
    # check interior minima against a grid search; here the stored value against an independent fit)
    top = torch.softmax(logits / stored["temperature"], 1).max(1).values
    # The lowest threshold (0.5 or a photo's confidence) keeping answers at least 99 % right; 1 (always
    # unsure) when even the most confident photo is wrong.
    candidates = sorted([0.5, *top.tolist()])
    expected_threshold = next((t for t in candidates if right[top >= t - 1e-9].float().mean() >= 0.99), 1.0)
    assert stored["threshold"] == pytest.approx(expected_threshold, abs=1e-4)

    # predict with a threshold just above and just below a photo's calibrated confidence.
    photo = paths[0]
    confidence = float(top[0])
    answers = {}
    for threshold in (confidence + 1e-3, confidence - 1e-3):
        assert cli.main(["predict", str(checkpoint), photo, "--threshold", str(threshold), "--json"]) == 0
        answers[threshold] = json.loads(capsys.readouterr().out)[0]
    above, below = answers[confidence + 1e-3], answers[confidence - 1e-3]
    assert above["probability"] == pytest.approx(confidence, abs=1e-4)
    assert above["temperature"] == pytest.approx(stored["temperature"])
    assert above["class"] == "unsure" and below["class"] == below["best_guess"] != "unsure"


def test_train_discriminative(small_folder, real_weights, output_dir, tmp_path, capsys, optimizers_made):
    checkpoint = tmp_path / "discriminative.pt"
    stdout, stderr = train(capsys, small_folder, "--method", "discriminative", "--epochs", 1, "--lr", 2e-4,
                           "--out", checkpoint)
    assert "discriminative learning rates" in stderr
    # The head first, on the frozen backbone, at its default 1e-3; then everything: head at --lr, backbone 1e-5.
    assert optimizers_made == [[(None, 1e-3)], [("head", 2e-4), ("backbone", 1e-5)]]
    payload = payload_of(checkpoint)
    assert payload["extra"]["method"] == "discriminative" and payload["extra"]["epochs"] == 1
    assert len(payload["history"]["epochs"]) == 1  # the history of the fine-tuning phase
    pretrained = torch.load(real_weights, map_location="cpu", weights_only=True)
    backbone = {k.removeprefix("backbone."): v for k, v in payload["state_dict"].items() if k.startswith("backbone.")}
    changed = {k for k, v in backbone.items() if not torch.equal(v, pretrained[k])}
    assert any(k.endswith(".weight") for k in changed)  # the backbone learned ...
    assert not any(k.endswith(("running_mean", "running_var")) for k in changed)  # ... BatchNorm statistics kept


def test_train_cut(small_folder, real_weights, output_dir, tmp_path, capsys, optimizers_made):
    """--method cut: one optimizer with the head at --lr and the blocks from the cut 10x lower; below the cut the
    pretrained weights stay exactly as in the file, the blocks above learn, BatchNorm statistics stay."""
    checkpoint = tmp_path / "cut.pt"
    stdout, stderr = train(capsys, small_folder, "--method", "cut", "--cut", "features.18", "--epochs", 2,
                           "--lr", 2e-3, "--out", checkpoint)
    assert "the blocks from features.18 on and the head" in stderr and "validation accuracy:" in stdout
    assert optimizers_made == [[("head", 2e-3), ("blocks", 2e-4)]]
    payload = payload_of(checkpoint)
    assert payload["extra"]["method"] == "cut" and payload["extra"]["cut"] == "features.18"
    pretrained = torch.load(real_weights, map_location="cpu", weights_only=True)
    backbone = {k.removeprefix("backbone."): v for k, v in payload["state_dict"].items() if k.startswith("backbone.")}
    changed = {k for k, v in backbone.items() if not torch.equal(v, pretrained[k])}
    assert changed and all(k.startswith("features.18.") for k in changed), sorted(changed)[:5]
    assert not any(k.endswith(("running_mean", "running_var")) for k in changed)


def test_train_seed_overrides_the_setting(small_folder, real_weights, output_dir, tmp_path, capsys, monkeypatch):
    def run(setting: int, *args) -> dict:
        monkeypatch.setenv("TLCOURSE_SEED", str(setting))
        checkpoint = tmp_path / f"seed-{setting}-{len(args)}.pt"
        _, stderr = train(capsys, small_folder, "--epochs", 1, "--out", checkpoint, *args)
        return stderr, payload_of(checkpoint)

    (err_a, a), (_, b), (_, c) = run(4, "--seed", 3), run(3), run(4)
    assert "(seed 3)" in err_a and a["extra"]["seed"] == b["extra"]["seed"] == 3 and c["extra"]["seed"] == 4
    # --seed 3 with TLCOURSE_SEED=4 trains exactly what TLCOURSE_SEED=3 trains ...
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())
    # ... and not what TLCOURSE_SEED=4 trains (so the comparison above can fail).
    assert not torch.equal(a["state_dict"]["head.2.weight"], c["state_dict"]["head.2.weight"])


def test_train_backbone_option(small_folder, real_weights, output_dir, tmp_path, capsys, monkeypatch):
    """resnet18 has no offline ImageNet weights here: a file of random weights under torchvision's own file
    name stands in for them. What is checked is that --backbone reaches every step (model, transform,
    checkpoint name and contents, evaluate), not what ImageNet weights would learn."""
    checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    planted = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(planted, checkpoints / Path(torchvision.models.ResNet18_Weights.DEFAULT.url).name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    _, stderr = train(capsys, small_folder, "--backbone", "resnet18", "--epochs", 1)
    assert stderr.startswith("Training resnet18 ")
    checkpoint = output_dir / "resnet18-freeze.pt"  # the default name follows the backbone
    payload = payload_of(checkpoint)
    assert payload["state_dict"]["head.2.weight"].shape == (2, 512)  # resnet18's 512 features, 2 classes
    assert load_checkpoint(checkpoint)[1]["backbone"] == "resnet18"  # the name is recorded for rebuilding
    for key, value in planted.items():
        if not key.startswith("fc."):  # torchvision's classifier is replaced by the new head
            assert torch.equal(payload["state_dict"][f"backbone.{key}"], value), key
    assert cli.main(["evaluate", str(checkpoint), str(small_folder), "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 12


# --------------------------------------------------------------------------- end to end (slow)
@pytest.mark.slow
@pytest.mark.timeout(1800)  # a full training run on 1,434 photos (about 80 s cold on a quiet 2-core CPU)
def test_train_evaluate_predict_end_to_end(tmp_path, data_dir, real_weights, output_dir, require):
    """The reference solution from a terminal, on the real photos with the real MobileNetV2 weights.

    ``train`` runs the course's default recipe (weight freezing with cached augmented views, all
    1,434 photos split 80/10/10 from seed 0); ``robustness`` then runs the saved model over the
    validation photos under every change of the report, the guard against a recipe that gets
    worse on changed photos (chosen on validation, as everything is); ``evaluate`` runs it over a
    folder holding only the held-out test photos of that split (never trained on), which must reach
    the README's 98%, and over the field test (photos from elsewhere), which is printed, never a
    target; ``predict`` classifies photos one by one.
    """
    from tlcourse.config import get_config
    from tlcourse.recipes import EPOCHS
    from tlcourse.robustness import DEFAULT_CHANGES

    checkpoint = tmp_path / "reference.pt"

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "tlcourse", *args], capture_output=True, text=True,
                                cwd=tmp_path, timeout=3600)
        assert result.returncode == 0, result.stderr
        return result

    trained = run("train", str(data_dir), "--method", "freeze", "--seed", "0", "--out", str(checkpoint),
                  "--device", "cpu")
    print(trained.stderr[-2000:], trained.stdout)
    assert f"epoch {EPOCHS}/{EPOCHS}" in trained.stderr  # text progress, one line per epoch
    val = float(trained.stdout.split("validation accuracy:")[1].split()[0])
    test = float(trained.stdout.split("test accuracy:")[1].split()[0])
    assert "(144 photos)" in trained.stdout  # 10% of each class: 72 + 72
    assert checkpoint.is_file() and val >= 0.95

    # The validation and held-out photos of the split train used (seed 0), linked into folders of their own.
    from tlcourse.data import load_course_data

    split = load_course_data(data_dir, seed=0)
    folders = {}
    for part in ("val", "test"):
        folders[part] = tmp_path / part
        for path, name in zip(split.part(part)["file_path"], split.part(part)["class_name"]):
            (folders[part] / name).mkdir(parents=True, exist_ok=True)
            (folders[part] / name / Path(path).name).symlink_to(path)
    held_out = folders["test"]
    assert not set(split.part("test")["file_path"]) & set(split.part("train")["file_path"])

    # The regression guard of the default recipe: validation accuracy under the report's changes (the
    # README's recipe table: 99.9 % with the default's views, 99.6 % with clean features only).
    robust = json.loads(run("robustness", str(checkpoint), str(folders["val"]), "--json", "--device", "cpu").stdout)
    accuracies = {row["change"]: row["accuracy"] for row in robust["changes"]}
    print("robustness (validation):", {k: round(v, 4) for k, v in accuracies.items()})
    assert robust["n"] == 144 and len(accuracies) == len(DEFAULT_CHANGES)
    assert accuracies["original"] >= 0.98
    assert np.mean(list(accuracies.values())) >= 0.99, accuracies

    evaluated = json.loads(run("evaluate", str(checkpoint), str(held_out), "--json", "--device", "cpu").stdout)
    print("evaluate (held-out):", {k: evaluated[k] for k in ("n", "accuracy", "per_class")})
    assert evaluated["n"] == 144 and evaluated["counts"] == {"dog": 72, "hotdog": 72}
    assert evaluated["accuracy"] >= 0.98  # the README's promise, on photos the model never saw
    assert min(evaluated["per_class"].values()) >= 0.95
    assert evaluated["accuracy"] == pytest.approx(test, abs=1e-4)  # train's own test pass agrees
    assert sum(map(sum, evaluated["confusion_matrix"])) == 144
    assert evaluated["correct"] == sum(evaluated["confusion_matrix"][k][k] for k in range(2))

    field = get_config().field_test_dir
    require(field.is_dir(), f"the field-test photos in {field}")
    report = json.loads(run("evaluate", str(checkpoint), str(field), "--json", "--device", "cpu").stdout)
    # Reported once, never a target: nothing is chosen or gated on the field test.
    print("evaluate (field test, reported only):", {k: report[k] for k in ("n", "accuracy", "balanced_accuracy")})
    assert report["n"] == 100

    dogs = sorted((held_out / "dog").glob("*.jpg"))[:2]
    hotdogs = sorted((held_out / "hotdog").glob("*.jpg"))[:2]
    lines = run("predict", str(checkpoint), *map(str, dogs + hotdogs), "--device", "cpu").stdout.splitlines()
    assert len(lines) == 4
    for line, expected in zip(lines, ["dog", "dog", "hotdog", "hotdog"]):
        _, name, prob = line.split("\t")
        assert name == expected and 0.5 < float(prob) <= 1.0
