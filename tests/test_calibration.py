"""Calibration: ECE and reliability bins against hand-computed values, the fitted temperature against a
brute-force search and against the known over-confidence of a synthetic model, calibration lowering the
validation ECE, the threshold rule and the verdict by hand, and `tlcourse predict` answering "unsure" below the threshold."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tlcourse import cli
from tlcourse.calibration import (Calibration, calibrate, choose_threshold, expected_calibration_error,
                                  fit_temperature, plot_reliability, reliability_table, verdict)
from tlcourse.checkpoint import save_checkpoint
from tlcourse.errors import ConfigError
from tlcourse.models import build_model

from test_cli import assert_answers_vary, small_folder, torchvision_model  # noqa: F401 - fixtures


def reference_probabilities(checkpoint, images) -> np.ndarray:
    """Softmax of torchvision's MobileNetV2 with the checkpoint's tensors, with the weights' own preset transform."""
    import torchvision
    from PIL import Image

    net = torchvision_model(checkpoint)
    transform = torchvision.models.MobileNet_V2_Weights.DEFAULT.transforms()
    with torch.no_grad():
        return np.stack([torch.softmax(net(transform(Image.open(p).convert("RGB")).unsqueeze(0)), 1)[0].numpy()
                         for p in images])


def test_ece_against_a_hand_computation():
    # Top probabilities 0.95, 0.95, 0.65, 0.65 (bins (0.933, 1] and (0.6, 0.667] of 15):
    # bin 1: confidence 0.95, 1 of 2 right -> gap 0.45; bin 2: confidence 0.65, 2 of 2 right -> gap 0.35.
    # ECE = 2/4 * 0.45 + 2/4 * 0.35 = 0.40.
    probs = np.array([[0.95, 0.05], [0.05, 0.95], [0.65, 0.35], [0.35, 0.65]])
    labels = np.array([0, 0, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.40)
    table = reliability_table(probs, labels)
    assert table["n"].tolist() == [2, 2]
    assert table["accuracy"].tolist() == [1.0, 0.5] and table["confidence"].tolist() == pytest.approx([0.65, 0.95])
    assert table["lower"].tolist() == pytest.approx([9 / 15, 14 / 15])  # 0.65 in (0.6, 0.667], 0.95 in (0.933, 1]
    assert table["upper"].tolist() == pytest.approx([10 / 15, 1.0])


#: Seven photos, 5 bins (edges 0, 0.2, ..., 1), every bin closed on the right, ``(lower, upper]``:
#: top probability, right?
#:   0.6 right                        -> (0.4, 0.6]: confidence 0.6,    accuracy 1    (gap -0.4)
#:   0.8 right, 0.8 right, 0.7 right  -> (0.6, 0.8]: confidence 2.3/3,  accuracy 1    (gap -0.2333)
#:   0.9 wrong, 1.0 right, 0.85 wrong -> (0.8, 1.0]: confidence 2.75/3, accuracy 1/3  (gap +0.5833)
#: Two photos on the edge 0.8 belong to the lower bin; neighbouring bins have gaps of opposite signs.
#: ECE (5 bins) = (1 * 0.4 + 3 * 0.7/3 + 3 * 1.75/3) / 7 = 2.85 / 7; with 1 bin the gaps cancel in part:
#: |5.65/7 - 5/7| = 0.65 / 7. (Lesson 8's written-out ECE is checked on these numbers too.)
EDGE_TOP = [0.6, 0.8, 0.8, 0.7, 0.9, 1.0, 0.85]
EDGE_RIGHT = [True, True, True, True, False, True, False]


def edge_case() -> tuple[np.ndarray, np.ndarray]:
    top = np.array(EDGE_TOP)
    probs = np.stack([top, 1 - top], 1)
    return probs, np.where(EDGE_RIGHT, 0, 1)


def test_ece_bins_are_closed_on_the_right_at_the_edges():
    probs, labels = edge_case()
    table = reliability_table(probs, labels, n_bins=5)
    assert table["lower"].tolist() == pytest.approx([0.4, 0.6, 0.8])
    assert table["upper"].tolist() == pytest.approx([0.6, 0.8, 1.0])
    assert table["n"].tolist() == [1, 3, 3]  # the two photos at 0.8 in (0.6, 0.8], none in (0.8, 1.0]'s count
    assert table["confidence"].tolist() == pytest.approx([0.6, 2.3 / 3, 2.75 / 3])
    assert table["accuracy"].tolist() == pytest.approx([1.0, 1.0, 1 / 3])
    assert expected_calibration_error(probs, labels, n_bins=5) == pytest.approx(2.85 / 7)


def test_ece_does_not_let_gaps_of_opposite_signs_cancel():
    probs, labels = edge_case()
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(0.65 / 7)
    # One bin would call this model nearly calibrated; its bins say it is over- and under-confident.
    assert expected_calibration_error(probs, labels, n_bins=5) > 4 * expected_calibration_error(probs, labels, n_bins=1)


def test_every_bin_has_its_lower_and_upper_edge():
    # One photo in the middle of each of the 15 default bins: 40 classes, so that a top probability
    # as low as 1/30 is possible (the others share the rest equally).
    n_bins, n_classes = 15, 40
    top = (2 * np.arange(n_bins) + 1) / (2 * n_bins)
    probs = np.column_stack([top] + [(1 - top) / (n_classes - 1)] * (n_classes - 1))
    assert (probs.argmax(1) == 0).all()
    table = reliability_table(probs, np.zeros(n_bins, int))
    assert len(table) == n_bins and table["n"].tolist() == [1] * n_bins
    np.testing.assert_allclose(table["lower"], np.arange(n_bins) / n_bins, atol=1e-12)
    np.testing.assert_allclose(table["upper"], np.arange(1, n_bins + 1) / n_bins, atol=1e-12)
    np.testing.assert_allclose(table["confidence"], top)
    assert ((table["lower"] < table["confidence"]) & (table["confidence"] <= table["upper"])).all()


def test_a_perfectly_calibrated_model_has_ece_near_zero():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.5, 1.0, 200_000)
    labels = (rng.random(len(p)) >= p).astype(int)  # class 0 is right with probability p
    assert expected_calibration_error(np.stack([p, 1 - p], 1), labels) < 0.01


def overconfident(n: int, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from softmax(z), reported logits scale * z: a model `scale` times too sure."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 3, generator=generator) * 1.5
    labels = torch.multinomial(torch.softmax(z, 1), 1, generator=generator).squeeze(1)
    return z * scale, labels


def test_temperature_recovers_the_known_over_confidence():
    logits, labels = overconfident(20_000, 4.0, seed=1)
    assert fit_temperature(logits, labels) == pytest.approx(4.0, rel=0.05)


def test_temperature_minimises_the_loss_against_a_grid_search():
    logits, labels = overconfident(2_000, 2.5, seed=2)
    grid = torch.linspace(0.5, 6.0, 2201)
    losses = torch.stack([F.cross_entropy(logits / t, labels) for t in grid])
    best = float(grid[losses.argmin()])
    assert fit_temperature(logits, labels) == pytest.approx(best, abs=0.01)


def test_calibration_lowers_validation_ece():
    logits, labels = overconfident(3_000, 3.0, seed=3)
    result = calibrate(logits, labels)
    ece_before = expected_calibration_error(torch.softmax(logits, 1).numpy(), labels.numpy())
    assert result.ece_before == pytest.approx(ece_before, abs=1e-9)
    assert result.ece_after < 0.5 * result.ece_before and result.ece_before > 0.05
    # Temperature does not change a single answer, only how sure it sounds.
    assert torch.equal(result.probabilities(logits).argmax(1), logits.argmax(1))
    assert Calibration.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_temperature_is_one_when_validation_has_no_mistakes():
    logits = torch.tensor([[8.0, -8.0], [-9.0, 9.0]] * 20)
    labels = torch.tensor([0, 1] * 20)
    # The loss only falls as T shrinks (no minimum): the model's confidence is left as it is.
    assert F.cross_entropy(logits / 0.5, labels) < F.cross_entropy(logits, labels)
    assert fit_temperature(logits, labels) == 1.0


def test_temperature_stays_in_its_bounds():
    # Confident logits that say nothing about the labels: the best T is huge (a coin toss), clamped to 10.
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(4000, 2, generator=generator) * 5
    labels = torch.randint(0, 2, (4000,), generator=generator)
    assert F.cross_entropy(logits / 10, labels) < F.cross_entropy(logits / 5, labels)
    assert fit_temperature(logits, labels) == pytest.approx(10.0, abs=1e-3)


def test_threshold_by_hand():
    # Top probabilities and right/wrong: 0.55 wrong, 0.6 right, 0.7 wrong, 0.8 right, 0.9 right, 0.95 right.
    top = np.array([0.55, 0.6, 0.7, 0.8, 0.9, 0.95])
    right = np.array([False, True, False, True, True, True])
    probs = np.stack([top, 1 - top], 1)
    labels = np.where(right, 0, 1)
    # Kept at >= 0.8: 3 of 3 right; at >= 0.7: 3 of 4 (75 %); at >= 0.6: 4 of 5 (80 %); all: 4 of 6.
    assert choose_threshold(probs, labels, target_accuracy=0.99) == pytest.approx(0.8)
    assert choose_threshold(probs, labels, target_accuracy=0.85) == pytest.approx(0.8)
    assert choose_threshold(probs, labels, target_accuracy=0.8) == pytest.approx(0.6)
    assert choose_threshold(probs, labels, target_accuracy=0.5) == pytest.approx(0.5)  # 4 of 6 at the floor
    assert choose_threshold(probs[right], labels[right]) == pytest.approx(0.5)  # no mistakes: never unsure


def test_verdict_by_hand():
    calibration = Calibration(temperature=2.0, threshold=0.8, target_accuracy=0.99, ece_before=0.2, ece_after=0.1,
                              n=10)
    logits = torch.tensor([2.0, 0.0])
    answer = verdict(logits, ["dog", "hotdog"], calibration)  # softmax([1, 0]): e / (e + 1) = 0.7311
    assert answer.probabilities["dog"] == pytest.approx(np.e / (np.e + 1), abs=1e-6)
    assert answer.unsure and answer.answer == "unsure" and answer.best_guess == "dog"
    assert answer.describe() == "unsure (maybe dog, 73.1%)"
    assert verdict(logits, ["dog", "hotdog"], calibration, threshold=0.7).describe() == "dog (73.1%)"
    plain = verdict(logits, ["dog", "hotdog"])  # no calibration: the softmax, never unsure
    assert plain.probability == pytest.approx(np.exp(2) / (np.exp(2) + 1), abs=1e-6) and not plain.unsure
    assert Calibration.from_extra({"calibration": calibration.to_dict()}) == calibration
    assert Calibration.from_extra({}) is None
    with pytest.raises(ConfigError, match="3 outputs but 2 class names"):
        verdict(torch.zeros(3), ["dog", "hotdog"])


def test_predict_says_unsure_below_the_threshold(tmp_path, small_folder, real_weights, capsys):
    # Pretrained backbone (features differ from photo to photo) with a random head: varied probabilities.
    torch.manual_seed(0)
    model = build_model(2, "mobilenet_v2", weights="DEFAULT", offline=True)
    with torch.no_grad():
        model.head[-1].weight.normal_(0, 0.2)
    plain = save_checkpoint(tmp_path / "plain.pt", model, ["dog", "hotdog"])
    images = sorted(small_folder.rglob("*.jpg"))
    raw = reference_probabilities(plain, images)  # softmax of the logits, without tlcourse
    assert_answers_vary(raw)
    logits = np.log(raw)  # up to a constant per row, which softmax ignores 
    calibrated = np.exp(logits / 2.0) / np.exp(logits / 2.0).sum(1, keepdims=True)
    top = np.sort(calibrated.max(1))
    gap = max(range(3, 9), key=lambda i: top[i + 1] - top[i])  # far from every photo: float rounding cannot flip one
    threshold = float((top[gap] + top[gap + 1]) / 2)
    assert top[gap + 1] - top[gap] > 1e-3, top
    calibration = Calibration(temperature=2.0, threshold=threshold, target_accuracy=0.99, ece_before=0.2,
                              ece_after=0.1, n=10)
    checkpoint = save_checkpoint(tmp_path / "calibrated.pt", model, ["dog", "hotdog"],
                                 extra={"calibration": calibration.to_dict()})

    assert cli.main(["predict", str(checkpoint), *map(str, images), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    unsure = calibrated.max(1) < threshold
    assert 0 < unsure.sum() < len(images)  # both answers occur: the rule is really checked
    for result, p, expect_unsure in zip(results, calibrated, unsure):
        assert result["probability"] == pytest.approx(float(p.max()), abs=1e-4)
        assert result["unsure"] == bool(expect_unsure)
        assert result["class"] == ("unsure" if expect_unsure else ["dog", "hotdog"][int(p.argmax())])
        assert result["best_guess"] == ["dog", "hotdog"][int(p.argmax())]

    first_unsure = images[int(np.flatnonzero(unsure)[0])]
    assert cli.main(["predict", str(checkpoint), str(first_unsure)]) == 0
    assert capsys.readouterr().out.split("\t")[1] == "unsure"
    assert cli.main(["predict", str(checkpoint), str(first_unsure), "--threshold", "0"]) == 0
    assert capsys.readouterr().out.split("\t")[1] in ("dog", "hotdog")


def test_plot_reliability_draws_the_bins():
    import matplotlib

    matplotlib.use("Agg")
    probs = np.array([[0.95, 0.05], [0.05, 0.95], [0.65, 0.35], [0.35, 0.65]])
    ax = plot_reliability(probs, np.array([0, 0, 0, 1]))
    x, y = ax.lines[1].get_data()
    assert list(x) == pytest.approx([0.65, 0.95]) and list(y) == [1.0, 0.5]
    assert "ECE 0.400" in ax.get_legend().get_texts()[0].get_text()
