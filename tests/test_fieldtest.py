"""Field-test report: balanced accuracy and recall against scikit-learn, intervals against scipy's
Wilson interval, mistakes against a hand-made case, and `tlcourse evaluate` (text and --json) against
predictions computed without tlcourse."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import balanced_accuracy_score, recall_score

from tlcourse import cli
from tlcourse.fieldtest import balanced_accuracy, field_report, mistakes, recall_table

from test_cli import varied_checkpoint, reference_probabilities, small_folder  # noqa: F401 - fixtures


def wilson(k: int, n: int) -> tuple[float, float]:
    """scipy's Wilson interval; it uses z = 1.95996..., the package 1.96: they differ by ~3e-6."""
    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


def test_balanced_accuracy_and_recall_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    for n_classes in (2, 3, 5):
        y_true = rng.integers(0, n_classes, 200)
        y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, n_classes, 200))
        assert balanced_accuracy(y_true, y_pred, n_classes) == pytest.approx(balanced_accuracy_score(y_true, y_pred))
        table = recall_table(y_true, y_pred, [f"c{k}" for k in range(n_classes)])
        np.testing.assert_allclose(table["recall"], recall_score(y_true, y_pred, average=None))


def test_balanced_accuracy_is_not_fooled_by_a_large_class():
    # 90 dogs all right, 10 hotdogs all called dogs: accuracy 90 %, balanced 50 %.
    y_true = [0] * 90 + [1] * 10
    y_pred = [0] * 100
    assert balanced_accuracy(y_true, y_pred, 2) == 0.5


def test_recall_intervals_are_wilson_intervals():
    y_true = [0] * 50 + [1] * 50 + [2] * 7
    y_pred = [0] * 50 + [1] * 43 + [0] * 7 + [1] * 7  # 50/50, 43/50, 0/7
    table = recall_table(y_true, y_pred, ["dog", "hotdog", "taco"])
    for name, (k, n) in {"dog": (50, 50), "hotdog": (43, 50), "taco": (0, 7)}.items():
        assert (table.at[name, "correct"], table.at[name, "n"]) == (k, n)
        assert (table.at[name, "low"], table.at[name, "high"]) == pytest.approx(wilson(k, n), abs=1e-5)


def test_a_class_without_photos_has_no_recall():
    table = recall_table([0, 0], [0, 1], ["dog", "hotdog"])
    assert np.isnan(table.at["hotdog", "recall"]) and table.at["hotdog", "n"] == 0
    assert balanced_accuracy([0, 0], [0, 1], 2) == 0.5  # the empty class does not count


def hand_frame() -> pd.DataFrame:
    # 4 photos: a/b dogs, c/d hotdogs; b and d wrong, d more confidently.
    return pd.DataFrame({"label": [0, 0, 1, 1], "pred": [0, 1, 1, 0],
                         "prob_0": [0.9, 0.4, 0.2, 0.95], "prob_1": [0.1, 0.6, 0.8, 0.05],
                         "confidence": [0.9, 0.6, 0.8, 0.95]})


def test_mistakes_are_the_wrong_photos_most_confident_first():
    table = mistakes(hand_frame(), ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], ["dog", "hotdog"])
    assert table.to_dict(orient="records") == [
        {"file": "d.jpg", "true": "hotdog", "predicted": "dog", "probability": 0.95},
        {"file": "b.jpg", "true": "dog", "predicted": "hotdog", "probability": 0.6},
    ]
    with pytest.raises(ValueError):
        mistakes(hand_frame(), ["a.jpg"], ["dog", "hotdog"])


def test_field_report_to_dict_is_json_with_the_hand_values():
    report = field_report(hand_frame(), ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], ["dog", "hotdog"])
    plain = json.loads(json.dumps(report.to_dict()))
    assert (report.n, report.correct, report.accuracy) == (4, 2, 0.5)
    assert report.interval == pytest.approx(wilson(2, 4), abs=1e-5)
    assert plain["balanced_accuracy"] == 0.5
    assert plain["recall"]["dog"] == {"n": 2, "correct": 1, "recall": 0.5, "interval": pytest.approx(list(wilson(1, 2)), abs=1e-5)}
    assert [m["file"] for m in plain["mistakes"]] == ["d.jpg", "b.jpg"]
    assert "balanced accuracy 50.0%" in report.summary()


def test_evaluate_reports_intervals_balanced_accuracy_and_mistakes(small_folder, varied_checkpoint, capsys):
    images = sorted(small_folder.rglob("*.jpg"))
    names = ["dog", "hotdog"]
    labels = np.array([names.index(p.parent.name) for p in images])
    probs = reference_probabilities(varied_checkpoint, images)
    preds = probs.argmax(1)

    assert cli.main(["evaluate", str(varied_checkpoint), str(small_folder), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, preds))
    correct = int((labels == preds).sum())
    assert result["accuracy_interval"] == pytest.approx(list(wilson(correct, len(images))), abs=1e-5)
    for k, name in enumerate(names):
        mine = labels == k
        assert result["recall"][name]["correct"] == int((preds[mine] == k).sum())
        assert result["recall"][name]["interval"] == pytest.approx(list(wilson(int((preds[mine] == k).sum()),
                                                                                int(mine.sum()))), abs=1e-5)
    wrong = {str(images[i]): (names[labels[i]], names[preds[i]], float(probs[i, preds[i]]))
             for i in np.flatnonzero(labels != preds)}
    assert len(wrong) > 0  # a random head gets some wrong: the list is really checked
    got = {m["file"]: (m["true"], m["predicted"], m["probability"]) for m in result["mistakes"]}
    assert got.keys() == wrong.keys()
    # Most confident first: the reference's probabilities in the report's order never rise (beyond float
    # rounding between the two implementations), and they spread enough for the order to mean something.
    in_order = [wrong[m["file"]][2] for m in result["mistakes"]]
    assert all(a >= b - 1e-4 for a, b in zip(in_order, in_order[1:])), in_order
    assert len(in_order) >= 3 and in_order[0] - in_order[-1] > 0.1, in_order
    for file, (true, predicted, probability) in wrong.items():
        assert got[file][:2] == (true, predicted)
        assert got[file][2] == pytest.approx(probability, abs=1e-4)

    assert cli.main(["evaluate", str(varied_checkpoint), str(small_folder)]) == 0
    text = capsys.readouterr().out
    assert "balanced accuracy" in text and "95 % interval" in text
    assert f"mistakes ({len(wrong)}" in text
    for file in wrong:
        assert file in text
