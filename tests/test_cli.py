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
from PIL import Image
from torchvision.transforms import v2

from tlcourse import cli
from tlcourse.checkpoint import save_checkpoint
from tlcourse.models import build_model

COMMANDS = ["download-data", "prefetch-weights", "doctor", "train", "evaluate", "predict"]


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


def test_runs_as_module_and_console_script():
    result = subprocess.run([sys.executable, "-m", "tlcourse", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("tlcourse ")
    script = Path(sys.executable).parent / "tlcourse"
    if not script.exists():
        pytest.skip("tlcourse is not installed as a console script in this environment")
    result = subprocess.run([str(script), "predict", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: tlcourse predict" in result.stdout


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


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of an untrained MobileNetV2 (no pretrained weights needed) with a large random head,
    so its predictions are arbitrary but far from ties."""
    torch.manual_seed(0)
    model = build_model(2, "mobilenet_v2", weights=None)
    with torch.no_grad():
        model.head[-1].weight.normal_(0, 5.0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "random.pt", model, ["dog", "hotdog"])


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


def reference_probabilities(checkpoint: Path, images: list[Path]) -> np.ndarray:
    """Probabilities computed independently of the CLI and of tlcourse: torchvision's model and transforms
    built here, one image at a time."""
    model = torchvision_model(checkpoint)
    transform = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224), v2.ToImage(),
                            v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    rows = []
    with torch.no_grad():
        for path in images:
            x = transform(Image.open(path).convert("RGB")).unsqueeze(0)
            rows.append(torch.softmax(model(x), dim=1)[0].numpy())
    return np.stack(rows)


def test_evaluate_json_matches_an_independent_reference(small_folder, random_checkpoint, capsys):
    images = sorted(small_folder.rglob("*.jpg"))
    labels = np.array([0 if p.parent.name == "dog" else 1 for p in images])
    preds = reference_probabilities(random_checkpoint, images).argmax(1)

    assert cli.main(["evaluate", str(random_checkpoint), str(small_folder), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # stdout holds exactly one JSON object
    assert result["n"] == len(images) == 12
    assert result["accuracy"] == pytest.approx(float((preds == labels).mean()))
    for k, name in enumerate(["dog", "hotdog"]):
        assert result["per_class"][name] == pytest.approx(float((preds[labels == k] == k).mean()))
    expected = [[int(((labels == t) & (preds == p)).sum()) for p in (0, 1)] for t in (0, 1)]
    assert result["confusion_matrix"] == expected
    assert result["class_names"] == ["dog", "hotdog"]


def test_evaluate_prints_accuracy_per_class_and_confusion_matrix(small_folder, random_checkpoint, capsys):
    assert cli.main(["evaluate", str(random_checkpoint), str(small_folder)]) == 0
    out = capsys.readouterr().out
    assert "accuracy:" in out and "per-class accuracy:" in out and "confusion matrix" in out
    assert "dog:" in out and "hotdog:" in out and "(6 photos)" in out


def test_evaluate_a_folder_with_some_of_the_classes(tmp_path, small_folder, random_checkpoint, capsys):
    only = tmp_path / "only"
    shutil.copytree(small_folder / "hotdog", only / "hotdog")
    assert cli.main(["evaluate", str(random_checkpoint), str(only), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 6 and result["per_class"]["dog"] is None
    assert result["per_class"]["hotdog"] == result["accuracy"]
    assert result["confusion_matrix"][0] == [0, 0]  # no dogs: labels follow the checkpoint, not the folder


def test_evaluate_refuses_other_class_names(tmp_path, small_folder, random_checkpoint, capsys):
    other = tmp_path / "other"
    shutil.copytree(small_folder / "dog", other / "dog")
    shutil.copytree(small_folder / "hotdog", other / "cat")
    assert cli.main(["evaluate", str(random_checkpoint), str(other)]) == 1
    err = capsys.readouterr().err
    assert "['cat']" in err and "['dog', 'hotdog']" in err


def test_evaluate_missing_checkpoint(tmp_path, small_folder, capsys):
    assert cli.main(["evaluate", str(tmp_path / "none.pt"), str(small_folder)]) == 1
    assert "Checkpoint not found" in capsys.readouterr().err


def test_predict_matches_the_reference(small_folder, random_checkpoint, capsys):
    images = sorted(small_folder.rglob("*.jpg"))[::3]
    probs = reference_probabilities(random_checkpoint, images)
    assert cli.main(["predict", str(random_checkpoint), *map(str, images), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == [str(p) for p in images]
    for result, p in zip(results, probs):
        assert result["class"] == ["dog", "hotdog"][int(p.argmax())]
        assert result["probability"] == pytest.approx(float(p.max()), abs=1e-4)
        assert sum(result["probabilities"].values()) == pytest.approx(1.0)
    assert cli.main(["predict", str(random_checkpoint), str(images[0])]) == 0
    path, name, prob = capsys.readouterr().out.strip().split("\t")
    assert (path, name) == (str(images[0]), results[0]["class"]) and float(prob) == pytest.approx(
        results[0]["probability"], abs=1e-4)


def test_predict_names_a_missing_or_broken_image(tmp_path, small_folder, random_checkpoint, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    good = next(small_folder.rglob("*.jpg"))
    code = cli.main(["predict", str(random_checkpoint), str(tmp_path / "missing.jpg"), str(broken), str(good)])
    captured = capsys.readouterr()
    assert code == 1
    assert "missing.jpg" in captured.err and "broken.jpg" in captured.err
    assert str(good) in captured.out  # the readable one is still answered


def test_train_on_a_missing_folder_says_how_to_get_data(tmp_path, capsys):
    assert cli.main(["train", str(tmp_path / "nothing")]) == 1
    assert "tlcourse download-data" in capsys.readouterr().err


# --------------------------------------------------------------------------- end to end (slow)
@pytest.mark.slow
def test_train_evaluate_predict_end_to_end(tmp_path, data_dir, real_weights, output_dir):
    """The reference solution from a terminal, on the real photos with the real MobileNetV2 weights.

    ``train`` runs the course's default recipe (weight freezing, 5 epochs, all 1,434
    photos split 80/10/10); ``evaluate`` then runs the saved model over the whole real
    folder, which must reach 97%; ``predict`` classifies photos one by one.
    """
    checkpoint = tmp_path / "reference.pt"

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "tlcourse", *args], capture_output=True, text=True,
                                cwd=tmp_path, timeout=3600)
        assert result.returncode == 0, result.stderr
        return result

    trained = run("train", str(data_dir), "--method", "freeze", "--out", str(checkpoint), "--device", "cpu")
    print(trained.stderr[-2000:], trained.stdout)
    assert "epoch 5/5" in trained.stderr  # text progress, one line per epoch
    val = float(trained.stdout.split("validation accuracy:")[1].split()[0])
    test = float(trained.stdout.split("test accuracy:")[1].split()[0])
    assert "(144 photos)" in trained.stdout  # 10% of each class: 72 + 72
    assert checkpoint.is_file() and val >= 0.95 and test >= 0.95

    evaluated = json.loads(run("evaluate", str(checkpoint), str(data_dir), "--json", "--device", "cpu").stdout)
    print("evaluate:", {k: evaluated[k] for k in ("n", "accuracy", "per_class")})
    assert evaluated["n"] == 1434
    assert evaluated["accuracy"] >= 0.97
    assert min(evaluated["per_class"].values()) >= 0.95
    assert sum(map(sum, evaluated["confusion_matrix"])) == 1434
    assert evaluated["correct"] == sum(evaluated["confusion_matrix"][k][k] for k in range(2))

    dogs = sorted((data_dir / "dog").glob("*.jpg"))[-2:]
    hotdogs = sorted((data_dir / "hotdog").glob("*.jpg"))[-2:]
    lines = run("predict", str(checkpoint), *map(str, dogs + hotdogs), "--device", "cpu").stdout.splitlines()
    assert len(lines) == 4
    for line, expected in zip(lines, ["dog", "dog", "hotdog", "hotdog"]):
        _, name, prob = line.split("\t")
        assert name == expected and 0.5 < float(prob) <= 1.0
