"""Data: scanning a photo folder, the labels CSV, the Dataset, the seeded stratified split, subsets.

Every test makes its own small images with PIL in ``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tlcourse.data import (
    LABEL_COLUMNS,
    CSVDataset,
    SkippedFilesWarning,
    Split,
    TransformSettings,
    class_names,
    create_csv,
    eval_transform,
    load_course_data,
    read_labels_csv,
    scan_folder,
    stratified_split,
    subset_per_class,
    write_labels_csv,
)


# The photos fixture holds a notes.txt on purpose; the scan test checks its warning, the others ignore it.
pytestmark = pytest.mark.filterwarnings("ignore::tlcourse.data.SkippedFilesWarning")


def make_image(path: Path, size=(40, 30), color=(200, 30, 30), mode="RGB") -> Path:
    """Write a small solid-colour image (size is PIL's (width, height))."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else 128).save(path)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A photo folder with the awkward things a learner's folder has."""
    root = tmp_path / "photos"
    make_image(root / "hotdog" / "h1.jpg")
    make_image(root / "hotdog" / "h2.PNG", color=(10, 200, 10))  # upper-case ending
    make_image(root / "dog" / "d2.jpg")
    make_image(root / "dog" / "d1.jpeg")
    make_image(root / "dog" / "puppies" / "d3.png")  # nested folder: still a dog
    make_image(root / "cat" / "c1.bmp", mode="L")  # greyscale
    # Things that must be left out:
    make_image(root / "dog" / ".hidden.jpg")
    make_image(root / "dog" / ".ipynb_checkpoints" / "d1-checkpoint.jpg")
    make_image(root / ".thumbnails" / "t.jpg")  # hidden class folder
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / ".DS_Store").write_bytes(b"\0\1")
    (root / "README.md").write_text("a file at the top, not a class")
    return root


def test_scan_folder_builds_the_labels_table(photos):
    with pytest.warns(SkippedFilesWarning, match="notes.txt") as caught:
        table = scan_folder(photos)
    message = " ".join(str(w.message) for w in caught)
    assert "hidden" not in message and "d1-checkpoint" not in message  # hidden files are skipped quietly
    assert list(table.columns) == LABEL_COLUMNS
    # Classes sorted by name; labels are the positions in that order.
    assert class_names(table) == ["cat", "dog", "hotdog"]
    names = [Path(p).relative_to(photos.resolve()).as_posix() for p in table["file_path"]]
    assert names == ["cat/c1.bmp", "dog/d1.jpeg", "dog/d2.jpg", "dog/puppies/d3.png", "hotdog/h1.jpg", "hotdog/h2.PNG"]
    assert list(table["label"]) == [0, 1, 1, 1, 2, 2]
    assert list(table["class_name"]) == ["cat", "dog", "dog", "dog", "hotdog", "hotdog"]
    assert all(Path(p).is_absolute() for p in table["file_path"])


def test_scan_folder_is_independent_of_creation_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for name in ["z", "m", "a"]:
        make_image(a / name / "1.png")
    for name in ["a", "m", "z"]:
        make_image(b / name / "1.png")
    assert class_names(scan_folder(a)) == class_names(scan_folder(b)) == ["a", "m", "z"]


def test_scan_folder_errors_name_the_folder_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="TLCOURSE_DATA"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    make_image(tmp_path / "flat" / "x.jpg")
    with pytest.raises(ValueError, match="subfolder"):
        scan_folder(tmp_path / "flat")
    make_image(tmp_path / "one" / "dog" / "x.jpg")
    (tmp_path / "one" / "hotdog").mkdir()
    with pytest.raises(ValueError, match="hotdog"):
        scan_folder(tmp_path / "one")


def test_create_csv_round_trip_with_pandas(photos, tmp_path):
    out = tmp_path / "outputs" / "labels.csv"  # its folder does not exist yet
    table = create_csv(photos, out)
    assert out.is_file()
    # The trusted reader: plain pandas.
    back = pd.read_csv(out)
    assert list(back.columns) == LABEL_COLUMNS
    pd.testing.assert_frame_equal(back, table.reset_index(drop=True), check_dtype=False)
    pd.testing.assert_frame_equal(read_labels_csv(out), back)
    assert not out.with_name(out.name + ".tmp").exists()


def test_write_labels_csv_keeps_only_the_label_columns(photos, tmp_path):
    table = scan_folder(photos).assign(extra=1)
    out = write_labels_csv(table, tmp_path / "t.csv")
    assert list(pd.read_csv(out).columns) == LABEL_COLUMNS


def test_create_csv_refuses_to_write_inside_the_photo_folder(photos):
    before = sorted(p for p in photos.rglob("*"))
    for target in (photos / "labels.csv", photos / "dog" / "labels.csv"):
        with pytest.raises(ValueError, match="photo folder") as info:
            create_csv(photos, target)
        assert str(target) in str(info.value) and "TLCOURSE_OUTPUT" in str(info.value)
    assert sorted(p for p in photos.rglob("*")) == before  # nothing of the learner's was touched


def test_read_labels_csv_checks_columns(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"path": ["a.jpg"], "label": [0]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="file_path"):
        read_labels_csv(bad)
    with pytest.raises(FileNotFoundError, match="create_csv"):
        read_labels_csv(tmp_path / "nope.csv")


def test_csv_dataset_items(photos, tmp_path):
    out = tmp_path / "labels.csv"
    table = create_csv(photos, out)
    settings = TransformSettings(resize=36, crop=32)
    for dataset in (CSVDataset(table, eval_transform(settings)), CSVDataset(out, eval_transform(settings))):
        assert len(dataset) == len(table)
        for i in range(len(dataset)):
            x, y = dataset[i]
            assert isinstance(x, torch.Tensor) and x.shape == (3, 32, 32) and x.dtype == torch.float32
            assert isinstance(y, int) and y == table["label"][i]
        assert dataset.classes == ["cat", "dog", "hotdog"]
        np.testing.assert_array_equal(dataset.labels, table["label"])


def test_csv_dataset_without_transform_gives_rgb_pil_images(photos):
    table = scan_folder(photos)
    image, label = CSVDataset(table)[0]  # cat/c1.bmp is greyscale on disk
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (40, 30)
    assert label == 0


def test_csv_dataset_reindexes_a_table_slice(photos):
    table = scan_folder(photos).iloc[[4, 1]]  # index labels 4 and 1, not 0 and 1
    dataset = CSVDataset(table)
    assert [dataset[i][1] for i in range(2)] == [2, 1]


# --------------------------------------------------------------------------- the split
def labels_for(counts: dict[int, int]) -> np.ndarray:
    rng = np.random.default_rng(123)
    return rng.permutation(np.concatenate([np.full(n, k) for k, n in counts.items()]))


def test_split_is_reproducible_from_its_seed():
    labels = labels_for({0: 100, 1: 60})
    a, b = stratified_split(labels, seed=3), stratified_split(labels, seed=3)
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))


def test_different_seeds_give_different_splits():
    labels = labels_for({0: 100, 1: 60})
    a, b = stratified_split(labels, seed=0), stratified_split(labels, seed=1)
    assert not np.array_equal(a.test, b.test)
    assert not np.array_equal(a.val, b.val)


@pytest.mark.parametrize("counts", [{0: 717, 1: 717}, {0: 100, 1: 60, 2: 25}, {0: 11, 1: 13}])
def test_split_is_disjoint_covers_all_rows_and_keeps_class_shares(counts):
    labels = labels_for(counts)
    split = stratified_split(labels, (0.8, 0.1, 0.1), seed=0)
    parts = [split.train, split.val, split.test]
    joined = np.concatenate(parts)
    assert len(joined) == len(set(joined.tolist())) == len(labels)  # disjoint and complete
    np.testing.assert_array_equal(np.sort(joined), np.arange(len(labels)))
    assert split.sizes() == {"train": len(split.train), "val": len(split.val), "test": len(split.test)}
    for label, n in counts.items():
        in_part = [int((labels[p] == label).sum()) for p in parts]
        # Each class is cut at round(n * fraction): within one image of the exact share.
        for got, fraction in zip(in_part, (0.8, 0.1, 0.1)):
            assert abs(got - n * fraction) <= 1, (label, in_part)


def test_split_of_the_real_folder_size_is_exactly_80_10_10_per_class():
    labels = labels_for({0: 717, 1: 717})
    split = stratified_split(labels, seed=0)
    for label in (0, 1):
        assert [int((labels[p] == label).sum()) for p in (split.train, split.val, split.test)] == [573, 72, 72]


def test_split_other_fractions():
    labels = labels_for({0: 50, 1: 50})
    split = stratified_split(labels, (0.6, 0.2, 0.2), seed=0)
    assert split.sizes() == {"train": 60, "val": 20, "test": 20}


def test_split_too_few_images_names_the_class():
    labels = np.array([0] * 30 + [1] * 2)
    with pytest.raises(ValueError) as info:
        stratified_split(labels, seed=0, class_names=["dog", "hotdog"])
    message = str(info.value)
    assert "'hotdog'" in message and "2 image" in message and "Add images" in message


@pytest.mark.parametrize("fractions", [(0.8, 0.1), (0.8, 0.2, 0.1), (1.1, -0.05, -0.05)])
def test_split_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        stratified_split(np.zeros(20, dtype=int), fractions)


# --------------------------------------------------------------------------- subsets
def table_with(counts: dict[int, int]) -> pd.DataFrame:
    rows = [(f"/x/{k}/{i}.jpg", k, f"c{k}") for k, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows, columns=LABEL_COLUMNS)


def test_subset_per_class():
    table = table_with({0: 10, 1: 3, 2: 7})
    subset = subset_per_class(table, 5, seed=0)
    assert subset["label"].value_counts().sort_index().tolist() == [5, 3, 5]
    assert set(subset["file_path"]) <= set(table["file_path"])
    assert subset["file_path"].is_unique
    assert list(subset.index) == list(range(len(subset)))
    pd.testing.assert_frame_equal(subset, subset_per_class(table, 5, seed=0))  # reproducible
    assert set(subset_per_class(table, 5, seed=1)["file_path"]) != set(subset["file_path"])
    assert subset_per_class(table, None) is table


def test_load_course_data_puts_it_together(tmp_path):
    for cls in ("dog", "hotdog"):
        for i in range(25):
            make_image(tmp_path / "d" / cls / f"{i:02d}.png", color=(i, 0, 0))
    # No normalisation (mean 0, std 1): a pixel's red value * 255 is then the photo's number, read back below.
    settings = TransformSettings(resize=20, crop=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    data = load_course_data(tmp_path / "d", settings, seed=0, per_class=20)
    assert data.classes == ["dog", "hotdog"]
    assert len(data.table) == 40
    parts = {name: set(data.part(name)["file_path"]) for name in ("train", "val", "test")}
    assert sum(map(len, parts.values())) == 40
    assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"])
    assert not (parts["val"] & parts["test"])
    assert data.split.sizes() == {"train": 32, "val": 4, "test": 4}
    x, y = next(iter(data.loader("val", batch_size=4)))
    assert x.shape == (4, 3, 16, 16)
    assert isinstance(data.split, Split)

    def loader_order(loader) -> list[tuple[int, int]]:
        """(label, photo number) in the order a loader yields them; the number is read from the pixels."""
        return [(int(label), round(float(image[0].mean()) * 255)) for xs, ys in loader for image, label in zip(xs, ys)]

    def table_order(name: str) -> list[tuple[int, int]]:
        """(label, photo number) in the order of the part's table; the number is the file's name."""
        part = data.part(name)
        return [(int(label), int(Path(path).stem)) for path, label in zip(part["file_path"], part["label"])]

    # Validation and test photos come in the table's order (not shuffled) ...
    assert loader_order(data.loader("val", batch_size=3)) == table_order("val")
    assert loader_order(data.loader("test", batch_size=3)) == table_order("test")
    # ... training photos all come, in another order (shuffled): so the two checks above can fail.
    train = loader_order(data.loader("train", batch_size=8))
    assert sorted(train) == sorted(table_order("train")) and train != table_order("train")
