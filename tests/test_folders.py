"""A learner's own photo folder, with every awkward case: each has its documented outcome.

One folder tree (``learner/``), made here with PIL, holds every case of issue 6:

* ``learner/photos``: a two-class folder with every per-file case (used, skipped and
  reported, or refused at load time), nested subfolders, and odd names;
* ``learner/one_class``, ``learner/empty_class``, ``learner/too_few``: the folder-level
  cases, each a clear error; ``learner/missing`` does not exist.

The outcomes are the table in tlcourse/data.py's scanning section and in the README's
"Preparing your own photos". Afterwards nothing under ``learner/`` has changed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tlcourse import data as tldata
from tlcourse.errors import ImageLoadError
from tlcourse.data import (
    CSVDataset,
    SkippedFilesWarning,
    TransformSettings,
    create_csv,
    eval_transform,
    inspect_image,
    load_course_data,
    load_image,
    make_loader,
    read_labels_csv,
    scan_folder,
)
from tlcourse.verify import verify_folder

W, H = 48, 40  # every ordinary test image; small so the suite stays quick
BOMB_LIMIT = 5000  # Image.MAX_IMAGE_PIXELS during these tests (Pillow's default is ~89 million)
RED, BLUE, GREEN, WHITE = (255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 255)


# --------------------------------------------------------------------------- building the folder
def solid(color=RED, size=(W, H), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def halves(left, right, size=(W, H), mode="RGB") -> Image.Image:
    """Left half one colour, right half another: shows whether an image was flipped or mangled."""
    img = Image.new(mode, size, left)
    img.paste(Image.new(mode, (size[0] // 2, size[1]), right), (size[0] // 2, 0))
    return img


def save(img: Image.Image, path: Path, **params) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **params)
    return path


def jpeg_bytes(img: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def upright_photo() -> Image.Image:
    """A portrait 'photo' whose orientation is visible: red top half, blue bottom half."""
    img = Image.new("RGB", (40, 64), RED)
    img.paste(Image.new("RGB", (40, 32), BLUE), (0, 32))
    return img


# Per-file cases in learner/photos/dog: name -> outcome with check="decode".
USED = {
    "good photo 01.jpg",  # spaces
    "chiot_ñandú_狗.jpg",  # non-ASCII
    "UPPER.JPG",
    "x.jpeg",
    "plain.png",
    "lossless.webp",
    "bitmap.bmp",
    "anim.gif",
    "gray.png",
    "rgba.png",
    "palette_transparent.png",
    "cmyk.jpg",
    "sixteen_bit.png",
    "exif_rotated.jpg",
    "png_named.jpg",  # a PNG with a .jpg ending: Pillow reads the content, not the name
    "nested/deeper/n1.jpg",  # nested subfolder: belongs to the class
}
SKIPPED = {  # name -> kind of the reason
    "tiny_1x1.png": "too small",
    "over_bomb_warning.png": "too large",  # between 1x and 2x MAX_IMAGE_PIXELS: Pillow only warns
    "over_bomb_error.png": "too large",  # over 2x: Pillow refuses
    "corrupt.jpg": "not an image",  # header destroyed
    "truncated.jpg": "corrupt or truncated",  # header fine, data cut off (found by decoding only)
    "download_error.jpg": "not an image",  # an HTML error page saved under a .jpg name
    "zero_bytes.jpg": "empty file",
    "notes.txt": "not an image",
    "IMG_0001.HEIC": "unsupported format",
    "moved away.jpg": "unreadable",
}
QUIET = {  # hidden and system files: in the report, no warning
    ".DS_Store": "hidden file",
    "._good photo 01.jpg": "hidden file",  # macOS resource fork next to a photo
    "Thumbs.db": "system file",
    ".ipynb_checkpoints": "hidden folder",
}


def build_learner_folder(base: Path) -> Path:
    """Make the whole ``learner/`` tree; return it."""
    learner = base / "learner"
    photos = learner / "photos"
    dog, hotdog = photos / "dog", photos / "hot dög"  # a class name with a space and an umlaut
    # Used as they are.
    save(halves(RED, BLUE), dog / "good photo 01.jpg", quality=95)
    save(halves(BLUE, RED), dog / "chiot_ñandú_狗.jpg", quality=95)
    save(solid(GREEN), dog / "UPPER.JPG")
    save(solid(BLUE), dog / "x.jpeg")
    save(halves(RED, GREEN), dog / "plain.png")
    save(halves(RED, GREEN), dog / "lossless.webp", lossless=True)
    save(halves(GREEN, BLUE), dog / "bitmap.bmp")
    frames = [solid(RED), solid(BLUE)]  # animated: the first frame is used
    frames[0].save(dog / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    save(solid(100, mode="L"), dog / "gray.png")
    rgba = Image.new("RGBA", (W, H), (0, 0, 0, 0))  # right half transparent (hidden colour: black)
    rgba.paste(Image.new("RGBA", (W // 2, H), (0, 255, 0, 255)), (0, 0))
    save(rgba, dog / "rgba.png")
    palette = Image.new("P", (W, H), 0)
    palette.putpalette([255, 0, 0, 0, 0, 0] + [0] * (3 * 254))  # index 0 red, index 1 black
    palette.paste(1, (W // 2, 0, W, H))
    save(palette, dog / "palette_transparent.png", transparency=1)  # index 1 transparent
    save(solid(RED).convert("CMYK"), dog / "cmyk.jpg", quality=95)
    sixteen = np.full((H, W), 32768, dtype=np.uint16)  # half of 65535
    sixteen[:, W // 2 :] = 65535
    save(Image.fromarray(sixteen), dog / "sixteen_bit.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display", as phones write portraits
    save(upright_photo().transpose(Image.Transpose.ROTATE_90), dog / "exif_rotated.jpg", exif=exif, quality=95)
    save(solid(GREEN), dog / "png_named.jpg", format="PNG")
    save(solid(RED), dog / "nested" / "deeper" / "n1.jpg")
    # Skipped and reported.
    save(solid(RED, size=(1, 1)), dog / "tiny_1x1.png")
    save(solid(RED, size=(80, 80)), dog / "over_bomb_warning.png")  # 6,400 px: 1.3x the test limit
    save(solid(RED, size=(120, 120)), dog / "over_bomb_error.png")  # 14,400 px: 2.9x the test limit
    # A noisy 70x70 JPEG (~5 kB): most of the file is image data after the header.
    good = jpeg_bytes(Image.fromarray(np.random.default_rng(1).integers(0, 256, (70, 70, 3), dtype=np.uint8)))
    (dog / "corrupt.jpg").write_bytes(good[:2] + bytes(range(256)) * 2 + good[514:])
    (dog / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (dog / "download_error.jpg").write_text("<html><body><h1>403 Forbidden</h1></body></html>\n")
    (dog / "zero_bytes.jpg").write_bytes(b"")
    (dog / "notes.txt").write_text("where I took these photos\n")
    (dog / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(100))
    (dog / "moved away.jpg").symlink_to(base / "no longer here.jpg")  # a broken link
    # Skipped quietly.
    (dog / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(60))
    (dog / "._good photo 01.jpg").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    (dog / "Thumbs.db").write_bytes(bytes(64))
    save(solid(RED), dog / ".ipynb_checkpoints" / "good photo 01-checkpoint.jpg")
    save(solid(RED), photos / ".hidden class" / "h.jpg")  # a hidden folder is not a class
    # The other class: plenty of plain photos so the folder can be split and trained on.
    for i in range(12):
        save(solid((200, 40 + 10 * i, 40)), hotdog / f"wurst {i:02d}.jpg")
    # Folder-level cases.
    for i in range(6):
        save(solid(BLUE), learner / "one_class" / "dog" / f"{i}.jpg")
    save(solid(BLUE), learner / "empty_class" / "dog" / "0.jpg")
    save(solid(RED), learner / "empty_class" / "hotdog" / "0.jpg")
    (learner / "empty_class" / "cat").mkdir()
    (learner / "empty_class" / "cat" / "Thumbs.db").write_bytes(bytes(8))  # only junk: still empty
    for i in range(10):
        save(solid(BLUE), learner / "too_few" / "dog" / f"{i}.jpg")
    for i in range(2):
        save(solid(RED), learner / "too_few" / "hotdog" / f"{i}.jpg")
    return learner


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every file and folder under ``folder``: contents hash, size and modification time."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames:
            path = Path(dirpath, name)
            state[str(path.relative_to(folder)) + "/"] = (path.stat().st_mtime_ns,)
        for name in filenames:
            path = Path(dirpath, name)
            stat = path.lstat()
            content = os.readlink(path) if path.is_symlink() else hashlib.sha256(path.read_bytes()).hexdigest()
            state[str(path.relative_to(folder))] = (content, stat.st_size, stat.st_mtime_ns)
    return state


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def bomb_limit(monkeypatch):
    """A low decompression-bomb limit, so the test needs no huge file."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", BOMB_LIMIT)
    return BOMB_LIMIT


@pytest.fixture
def learner(tmp_path, bomb_limit) -> Path:
    root = build_learner_folder(tmp_path)
    before = snapshot(root)
    yield root
    # Acceptance 1: nothing of the learner's is modified, moved, deleted or added.
    assert snapshot(root) == before


def names_in(table, root: Path) -> set[str]:
    return {Path(p).relative_to((root / "dog").resolve()).as_posix()
            for p in table["file_path"] if Path(p).is_relative_to((root / "dog").resolve())}


# --------------------------------------------------------------------------- the per-file outcomes
def test_verify_reports_every_case(learner):
    photos = learner / "photos"
    report = verify_folder(photos)
    assert report.ok, report.errors
    assert report.classes == ["dog", "hot dög"]
    assert names_in(report.images, photos) == USED
    assert (report.images["class_name"] == "hot dög").sum() == 12
    problems = {Path(p).relative_to(photos / "dog").as_posix(): kind
                for p, kind, c in zip(report.problems["file_path"], report.problems["kind"],
                                      report.problems["class_name"]) if c == "dog"}
    assert problems == {**SKIPPED, **QUIET}
    quiet = report.problems.set_index("file_path")["quiet"]
    assert all(quiet[str(photos / "dog" / n)] for n in QUIET)
    assert not any(quiet[str(photos / "dog" / n)] for n in SKIPPED)
    # The hidden folder at the top is not a class, and is reported (quietly).
    assert str(photos / ".hidden class") in set(report.problems["file_path"])
    # Reasons name the fix, not just the symptom.
    reasons = report.problems.set_index("file_path")["reason"]
    assert "MAX_IMAGE_PIXELS" in reasons[str(photos / "dog" / "over_bomb_error.png")]
    assert "convert it to JPEG" in reasons[str(photos / "dog" / "IMG_0001.HEIC")]
    assert "replace it" in reasons[str(photos / "dog" / "truncated.jpg")]


def test_verify_summary_table_and_printout(learner):
    report = verify_folder(learner / "photos")
    summary = report.summary()
    assert list(summary.index) == ["dog", "hot dög", "total"]
    assert list(summary.columns) == ["images", "skipped", "in_subfolders", "reasons"]
    assert summary.loc["dog", "images"] == len(USED)
    assert summary.loc["dog", "skipped"] == len(SKIPPED)  # hidden and system files not counted
    assert summary.loc["dog", "in_subfolders"] == 1
    assert summary.loc["total", "images"] == len(USED) + 12
    assert "2 too large" in summary.loc["dog", "reasons"]
    text = str(report)
    assert "READY" in text and "NOT READY" not in text
    for name in SKIPPED:
        assert f"dog/{name}" in text  # every skipped file is named in the printout
    assert ".DS_Store" not in text  # quiet files are counted, not listed
    assert f"{len(QUIET) + 1} hidden or system" in text


def test_scan_folder_header_check_skips_and_warns(learner):
    """The quick default check: everything but the files only decoding can unmask."""
    photos = learner / "photos"
    skipped = []
    with pytest.warns(SkippedFilesWarning) as caught:
        table = scan_folder(photos, skipped=skipped)
    header_only = {"truncated.jpg"}  # its header is intact
    assert names_in(table, photos) == USED | header_only
    assert {s.path.name for s in skipped if s.class_name == "dog"} == (set(SKIPPED) - header_only) | set(QUIET)
    message = str(caught[0].message)
    assert message.startswith(f"Skipped {len(SKIPPED) - len(header_only)} file(s)")
    assert "dog/zero_bytes.jpg (empty file" in message and "verify_folder" in message
    assert ".DS_Store" not in message
    # The thorough check agrees with verify_folder.
    with pytest.warns(SkippedFilesWarning):
        decoded = scan_folder(photos, check="decode")
    assert names_in(decoded, photos) == USED
    # check="none" only reads the directory and the file sizes.
    with pytest.warns(SkippedFilesWarning):
        listed = scan_folder(photos, check="none")
    assert names_in(listed, photos) == USED | {"tiny_1x1.png", "over_bomb_warning.png", "over_bomb_error.png",
                                                "corrupt.jpg", "download_error.jpg"} | header_only


def test_used_images_load_upright_in_rgb_with_sensible_colours(learner):
    dog = learner / "photos" / "dog"

    def pixel(name, xy):
        img = load_image(dog / name)
        assert img.mode == "RGB"
        return img.getpixel(xy)

    def close(a, b, tol=6):
        return all(abs(x - y) <= tol for x, y in zip(a, b))

    left, right = (2, H // 2), (W - 3, H // 2)
    # Ordinary files: exactly what Pillow itself decodes (the trusted reference).
    for name in ["good photo 01.jpg", "chiot_ñandú_狗.jpg", "UPPER.JPG", "plain.png", "lossless.webp",
                 "bitmap.bmp", "png_named.jpg", "nested/deeper/n1.jpg"]:
        with Image.open(dog / name) as ref:
            assert np.array_equal(np.asarray(load_image(dog / name)), np.asarray(ref.convert("RGB"))), name
    assert pixel("plain.png", left) == RED and pixel("lossless.webp", right) == GREEN
    assert pixel("anim.gif", left) == RED  # first frame
    assert pixel("gray.png", left) == (100, 100, 100)
    # Transparency composited on white (the hidden colour of the transparent pixels is black).
    assert pixel("rgba.png", left) == GREEN and pixel("rgba.png", right) == WHITE
    assert pixel("palette_transparent.png", left) == RED and pixel("palette_transparent.png", right) == WHITE
    assert close(pixel("cmyk.jpg", left), RED)
    # 16-bit: scaled to 8 bits (32768/257 = 127.5 -> 128; 65535 -> 255), not clipped at 255.
    assert pixel("sixteen_bit.png", left) == (128, 128, 128)
    assert pixel("sixteen_bit.png", right) == (255, 255, 255)
    with Image.open(dog / "sixteen_bit.png") as raw:
        assert raw.mode.startswith("I")
        assert raw.convert("RGB").getpixel(left) == (255, 255, 255)  # what plain Pillow would give


def test_exif_rotated_photo_comes_out_upright(learner):
    path = learner / "photos" / "dog" / "exif_rotated.jpg"
    with Image.open(path) as stored:
        assert stored.size == (64, 40)  # stored sideways, as a phone does
    img = load_image(path)
    assert img.size == (40, 64)
    top, bottom = img.getpixel((20, 8)), img.getpixel((20, 56))
    assert top[0] > 200 and top[2] < 60, top  # red on top
    assert bottom[2] > 200 and bottom[0] < 60, bottom  # blue at the bottom


def test_names_with_spaces_and_non_ascii_survive_the_csv(learner, tmp_path):
    out = tmp_path / "outputs" / "labels.csv"  # derived files go to the output folder
    with pytest.warns(SkippedFilesWarning):
        table = create_csv(learner / "photos", out)
    back = read_labels_csv(out)
    assert list(back["file_path"]) == list(table["file_path"])
    assert "hot dög" in set(back["class_name"])
    assert any("狗" in p for p in back["file_path"])
    image, label = CSVDataset(back.iloc[[0]])[0]
    assert image.mode == "RGB" and label == 0
    with pytest.raises(ValueError, match="output folder"):
        create_csv(learner / "photos", learner / "photos" / "labels.csv")  # never into the photos


# --------------------------------------------------------------------------- load-time errors
def test_unreadable_files_raise_an_error_naming_the_file_and_the_fix(learner):
    dog = learner / "photos" / "dog"
    for name in ["truncated.jpg", "download_error.jpg", "corrupt.jpg", "zero_bytes.jpg", "notes.txt"]:
        with pytest.raises(ImageLoadError, match="verify_folder") as caught:
            load_image(dog / name)
        assert name in str(caught.value)
        assert caught.value.path == dog / name
    with pytest.raises(ImageLoadError, match="MAX_IMAGE_PIXELS"):
        load_image(dog / "over_bomb_error.png")  # over 2x the limit: Pillow refuses
    with pytest.warns(Image.DecompressionBombWarning):
        assert load_image(dog / "over_bomb_warning.png").size == (80, 80)  # 1x-2x: Pillow only warns
    with pytest.raises(ImageLoadError, match="recreate the CSV"):
        load_image(dog / "gone.jpg")


@pytest.mark.parametrize("workers", [0, 1])
def test_a_bad_file_met_during_training_is_named(learner, workers):
    """The quick header scan lets a truncated photo through; the loader names it and the fix."""
    with pytest.warns(SkippedFilesWarning):
        table = scan_folder(learner / "photos")
    bad = table[table["file_path"].str.endswith("truncated.jpg")]
    dataset = CSVDataset(pd.concat([table.iloc[[0]], bad]), eval_transform(TransformSettings(resize=32, crop=32)))
    loader = make_loader(dataset, batch_size=2, num_workers=workers)
    with pytest.raises(ImageLoadError) as caught:
        for _ in loader:
            pass
    assert "truncated.jpg" in str(caught.value) and "verify_folder" in str(caught.value)


def test_inspect_image_rejects_an_unknown_check(learner):
    with pytest.raises(ValueError, match="decode"):
        inspect_image(learner / "photos" / "dog" / "x.jpeg", check="thorough")


# --------------------------------------------------------------------------- folder-level cases
def test_folder_level_problems_are_clear_errors(learner):
    with pytest.raises(FileNotFoundError, match="TLCOURSE_DATA"):
        scan_folder(learner / "missing")
    with pytest.raises(ValueError, match="at least two classes"):
        scan_folder(learner / "one_class")
    with pytest.raises(ValueError, match="without usable images.*cat"):
        scan_folder(learner / "empty_class")
    with pytest.raises(ValueError, match="No class subfolders.*point at one class folder"):
        scan_folder(learner / "one_class" / "dog")  # pointed one level too deep
    with pytest.raises(ValueError, match="'hotdog' has only 2 image"):
        load_course_data(learner / "too_few")


def test_verify_lists_folder_level_problems_without_raising(learner):
    for name, expected in [("missing", "not found"), ("one_class", "at least two classes"),
                           ("empty_class", "cat"), ("too_few", "'hotdog' has only 2")]:
        report = verify_folder(learner / name)
        assert not report.ok
        assert expected in " ".join(report.errors), (name, report.errors)
        assert "NOT READY" in str(report)
        with pytest.raises((FileNotFoundError, ValueError)):
            report.raise_if_not_ok()
    few = verify_folder(learner / "too_few")
    assert any("only 2 usable" in w for w in few.warnings)
    assert any("unbalanced" in w for w in few.warnings)


# --------------------------------------------------------------------------- training on it
def test_training_on_the_learner_folder_leaves_it_untouched(learner, tmp_path):
    """Verify, make the CSV, train one epoch and save a checkpoint: all outputs elsewhere."""
    from tlcourse.checkpoint import save_checkpoint
    from tlcourse.models import build_model
    from tlcourse.training import fit, seed_everything

    report = verify_folder(learner / "photos")
    out = tmp_path / "outputs"
    tldata.write_labels_csv(report.table, out / "labels.csv")
    seed_everything(0)
    settings = TransformSettings(resize=32, crop=32)
    dataset = CSVDataset(out / "labels.csv", eval_transform(settings))
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    assert images.shape == (len(USED) + 12, 3, 32, 32) and torch.isfinite(images).all()
    model = build_model(2, "mobilenet_v2", weights=None).freeze()
    optimizer = torch.optim.SGD(model.head.parameters(), lr=0.01)
    history = fit(model, make_loader(dataset, batch_size=8, shuffle=True), optimizer, epochs=1)
    assert len(history.epochs) == 1
    save_checkpoint(out / "model.pt", model, report.classes, history)
    assert sorted(p.name for p in out.iterdir()) == ["labels.csv", "model.pt"]
