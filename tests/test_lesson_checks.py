"""The lessons' verdicts: the 95 % Wilson interval against hand computation and scipy, the check
that a model learnt the task (a one-class model fails it), and the example-set detection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, binomtest

from tlcourse.config import get_config
from tlcourse.data import CourseData, Split, TransformSettings, stratified_split
from tlcourse.download import read_manifest
from tlcourse.evaluation import (CHANCE_PASS, check_learnt, is_course_example, lesson_check, lesson_verdict,
                                 recall_needed, wilson_interval)


def test_wilson_interval_against_a_hand_computation():
    # 144 of 144, z = 1.96: centre (1 + z²/288) / (1 + z²/144) = 1.0133389 / 1.0266778 = 0.9870076,
    # half width 1.96 * sqrt(z² / (4 * 144²)) / 1.0266778 = 1.96 * 0.0068056 / 1.0266778 = 0.0129924.
    low, high = wilson_interval(144, 144)
    assert low == pytest.approx(0.974015, abs=2e-6)
    assert high == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("correct,n", [(0, 8), (3, 8), (141, 144), (50, 100), (7, 7)])
def test_wilson_interval_against_scipy(correct, n):
    reference = binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(correct, n)
    # scipy uses the exact normal quantile 1.959964; the course's 1.96 moves the ends by < 1e-4.
    assert low == pytest.approx(reference.low, abs=1e-4)
    assert high == pytest.approx(reference.high, abs=1e-4)
    assert 0.0 <= low <= correct / n <= high <= 1.0


def test_wilson_interval_is_exact_at_both_ends_for_every_n():
    # Without the exact ends, 144/144 and 100/100 gave an upper end of 0.9999999999999999, below the
    # accuracy itself: an error bar drawn from it is negative and matplotlib refuses to draw it.
    for n in range(1, 2001):
        assert wilson_interval(n, n)[1] == 1.0, n
        assert wilson_interval(0, n)[0] == 0.0, n
        low, high = wilson_interval(n, n)
        assert low < 1.0 and wilson_interval(0, n)[1] > 0.0


@pytest.mark.parametrize("correct,n", [(-1, 5), (6, 5), (0, 0)])
def test_wilson_interval_rejects_impossible_counts(correct, n):
    with pytest.raises(ValueError):
        wilson_interval(correct, n)


CLASSES = ["dog", "hotdog"]


def test_a_model_that_always_answers_one_class_fails_even_at_chance_accuracy(capsys):
    # The smoke test split: 4 + 4 photos. Always "dog" is 50 % accurate, and recalls no hotdog.
    y_true = [0, 0, 0, 0, 1, 1, 1, 1]
    assert check_learnt(y_true, [0] * 8, CLASSES) is False
    assert "NOT learnt" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="hotdog"):
        check_learnt(y_true, [0] * 8, CLASSES, strict=True)


def test_per_class_minimum_leaves_a_guessing_model_at_most_one_percent():
    y_true = [0, 0, 0, 0, 1, 1, 1, 1]
    # 3 of 4 per class, the old "once more than chance", lets a coin through (5/16)^2 = 9.8 % of the time.
    assert check_learnt(y_true, [0, 0, 0, 1, 1, 1, 1, 0], CLASSES) is False
    assert check_learnt(y_true, [0, 0, 0, 0, 1, 1, 1, 1], CLASSES, strict=True) is True
    # Three classes of 4: a guess recalls 3 or more of 4 with (8 + 1) / 81 = 0.111 <= 0.01 ** (1/3) = 0.215.
    assert check_learnt([0] * 4 + [1] * 4 + [2] * 4, [0, 0, 0, 2, 1, 1, 1, 0, 2, 2, 2, 0],
                        ["a", "b", "c"], strict=True) is True
    assert check_learnt([0] * 4 + [1] * 4 + [2] * 4, [0, 0, 1, 2, 1, 1, 1, 0, 2, 2, 2, 0], ["a", "b", "c"]) is False


def test_too_few_photos_to_tell_a_model_from_a_guess(capsys):
    assert check_learnt([0, 1], [0, 1], CLASSES) is False  # 1 of 1 per class: a coin does it 25 % of the time
    assert "too few to tell a model from a guess" in capsys.readouterr().out


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("n_c", [1, 4, 5, 7, 8, 10, 72])
def test_recall_needed_is_the_smallest_count_a_guess_reaches_at_most_one_percent_of_the_time(n_c, k):
    """scipy's binomial tail: with r = recall_needed(n_c, k), a model guessing uniformly among k classes
    reaches r in every class (independently) with probability sf(r - 1)^k <= 1 %, and r - 1 would let
    it through more often."""
    r = recall_needed(n_c, k)
    assert 0 < r <= n_c + 1
    assert binom.sf(r - 1, n_c, 1 / k) ** k <= CHANCE_PASS == 0.01
    assert binom.sf(r - 2, n_c, 1 / k) ** k > CHANCE_PASS


def test_the_quick_run_lets_a_coin_through_at_most_one_percent_of_the_time():
    """The quick run's test split, from its sizes (smoke photos per class, the 80/10/10 split), and the
    probability that a coin passes check_learnt there: the classes' recall checks are independent, each
    a binomial tail (scipy), multiplied over the two classes."""
    per_class = get_config({"TLCOURSE_SMOKE": "1"}).smoke_images_per_class
    labels = np.repeat([0, 1], per_class)
    test = stratified_split(labels, seed=0).test
    assert np.bincount(labels[test]).tolist() == [8, 8]  # 80 per class: 64 train, 8 validation, 8 test
    needed = recall_needed(8, 2)
    coin = binom.sf(needed - 1, 8, 0.5) ** 2
    old = binom.sf(4 // 2 + 1 - 1, 4, 0.5) ** 2  # the old rule and size: 3 of 4 per class
    assert old == pytest.approx((5 / 16) ** 2)  # 9.8 %, the "about 10 %"
    assert needed == 7 and coin == pytest.approx((9 / 256) ** 2) and coin <= 0.01  # 0.12 %
    # Simulated: check_learnt itself on 5,000 coins.
    rng = np.random.default_rng(0)
    y_true = np.repeat([0, 1], 8)
    passed = sum(check_learnt(y_true, rng.integers(0, 2, 16), CLASSES, strict=False) for _ in range(5_000))
    assert passed / 5_000 == pytest.approx(coin, abs=0.003)


def test_accuracy_threshold_in_a_full_run():
    y_true = [0] * 72 + [1] * 72
    four_wrong = [0] * 70 + [1] * 2 + [1] * 70 + [0] * 2  # 140 of 144 = 97.2 %
    five_wrong = [0] * 69 + [1] * 3 + [1] * 70 + [0] * 2  # 139 of 144 = 96.5 %
    assert check_learnt(y_true, four_wrong, CLASSES, required_accuracy=0.97, strict=True)
    with pytest.raises(AssertionError, match="below the 97%"):
        check_learnt(y_true, five_wrong, CLASSES, required_accuracy=0.97, strict=True)
    assert not check_learnt(y_true, five_wrong, CLASSES, required_accuracy=0.97, strict=False)


def test_course_example_detection(tmp_path):
    example = pd.DataFrame({"class_name": ["dog", "hotdog"],
                            "file_path": ["/x/dog/dog_000bec180eb18c7604dcecc8fe0dba07.jpg", "/y/hotdog/hotdog_2.jpg"]})
    assert is_course_example(example)
    own = example.assign(file_path=["/x/dog/IMG_0001.jpg", "/y/hotdog/hotdog_2.jpg"])
    assert not is_course_example(own)
    renamed = example.assign(class_name=["chien", "hotdog"])
    assert not is_course_example(renamed)
    assert not is_course_example(example.iloc[:0])


def _lesson_data(course: bool) -> CourseData:
    """Four photos of two classes: the course's own (names from its manifest) or a learner's."""
    if course:
        manifest = read_manifest().groupby("class").head(2)
        table = pd.DataFrame({"file_path": [f"/photos/{c}/{f}" for c, f in zip(manifest["class"], manifest["file"])],
                              "label": [0, 0, 1, 1], "class_name": list(manifest["class"])})
    else:
        table = pd.DataFrame({"file_path": [f"/mine/{i}.jpg" for i in range(4)], "label": [0, 0, 1, 1],
                              "class_name": ["a", "a", "b", "b"]})
    classes = sorted(table["class_name"].unique())
    return CourseData(table, Split([0, 2], [1, 3], []), classes, TransformSettings())


@pytest.mark.parametrize("course,smoke,stops", [(True, False, True), (True, True, True), (False, False, False)])
def test_lesson_verdict_stops_only_on_the_course_photos(course, smoke, stops, capsys):
    """One class never recalled: the lesson stops on the course's photos (with what to try), and on a
    learner's own photos prints the verdict and what to try, and goes on."""
    data, cfg = _lesson_data(course), get_config({"TLCOURSE_SMOKE": "1" if smoke else "0"})
    if stops:
        with pytest.raises(AssertionError, match="Restart the kernel"):
            lesson_verdict([0, 0, 1, 1], [0, 0, 0, 0], data, cfg)
    else:
        assert lesson_verdict([0, 0, 1, 1], [0, 0, 0, 0], data, cfg) is False
        assert "What to try" in capsys.readouterr().out


def test_lesson_verdict_asks_for_the_recipe_accuracy_only_in_a_full_run(capsys):
    # 36 of 40 and 40 of 40 recall each class far above chance (recall_needed(40, 2) is well below 36),
    # while the accuracy, 95 %, is below the recipe's 97 %.
    data = _lesson_data(True)
    y_true, y_pred = [0] * 40 + [1] * 40, [0] * 36 + [1] * 4 + [1] * 40
    assert recall_needed(40, 2) < 36
    with pytest.raises(AssertionError, match="below the 97%"):
        lesson_verdict(y_true, y_pred, data, get_config({}))
    assert lesson_verdict(y_true, y_pred, data, get_config({"TLCOURSE_SMOKE": "1"})) is True


def test_lesson_check_stops_only_in_a_full_run_on_the_course_photos(capsys):
    full, quick = get_config({}), get_config({"TLCOURSE_SMOKE": "1"})
    with pytest.raises(AssertionError, match="try this"):
        lesson_check(False, "found that", "try this", _lesson_data(True), full)
    assert lesson_check(False, "found that", "try this", _lesson_data(True), quick) is False
    assert lesson_check(False, "found that", "try this", _lesson_data(False), full) is False
    assert "What to try: try this" in capsys.readouterr().out
    assert lesson_check(True, "found that", "try this", _lesson_data(True), full) is True


def test_quick_run_sizes_come_from_the_config():
    full, quick = get_config({}), get_config({"TLCOURSE_SMOKE": "1"})
    assert (full.photos_per_class, full.photos(128), full.photos(), full.epochs(4)) == (None, 128, None, 4)
    assert (quick.photos_per_class, quick.photos(128), quick.photos(8), quick.photos(), quick.epochs(4)) == (80, 16, 8, 16, 1)
