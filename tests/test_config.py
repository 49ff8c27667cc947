"""Course settings: defaults, environment overrides, the course root, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlcourse.config import SETTINGS, Config, course_root, get_config
from tlcourse.errors import ConfigError


@pytest.fixture
def course(tmp_path: Path) -> Path:
    """A course folder: the root has notebooks/, lessons run one level below it."""
    (tmp_path / "notebooks").mkdir()
    return tmp_path


def test_defaults_with_an_empty_environment(course):
    config = get_config(env={}, root=course)
    assert config == Config(
        data_dir=course / "data",
        backbone="mobilenet_v2",
        field_test_dir=course / "field-test",
        output_dir=course / "outputs",
        smoke=False,
        seed=0,
        device="auto",
        offline=False,
        dashboard="auto",
    )
    # The README documents these defaults; SETTINGS is what it is generated from.
    assert {name: default for name, (default, _) in SETTINGS.items()} == {
        "TLCOURSE_DATA": "data",
        "TLCOURSE_FIELD_TEST": "field-test",
        "TLCOURSE_BACKBONE": "mobilenet_v2",
        "TLCOURSE_OUTPUT": "outputs",
        "TLCOURSE_SMOKE": "0",
        "TLCOURSE_SEED": "0",
        "TLCOURSE_DEVICE": "auto",
        "TLCOURSE_OFFLINE": "0",
        "TLCOURSE_DASHBOARD": "auto",
    }


def test_environment_overrides_every_setting(course, tmp_path):
    photos = tmp_path / "elsewhere" / "photos"
    env = {
        "TLCOURSE_DATA": str(photos),
        "TLCOURSE_FIELD_TEST": "elsewhere/field",
        "TLCOURSE_BACKBONE": "vgg11",
        "TLCOURSE_OUTPUT": "build/out",
        "TLCOURSE_SMOKE": "1",
        "TLCOURSE_SEED": "42",
        "TLCOURSE_DEVICE": "CPU",
        "TLCOURSE_OFFLINE": "yes",
        "TLCOURSE_DASHBOARD": "Text ",
    }
    config = get_config(env=env, root=course)
    assert config.data_dir == photos  # absolute paths are kept as they are
    assert config.output_dir == course / "build" / "out"  # relative ones are under the course root
    assert config.field_test_dir == course / "elsewhere" / "field"
    assert config.backbone == "vgg11"
    assert config.smoke is True
    assert config.seed == 42
    assert config.device == "cpu"
    assert config.offline is True
    assert config.dashboard == "text"


def test_get_config_reads_os_environ(course, monkeypatch):
    monkeypatch.setenv("TLCOURSE_SEED", "7")
    monkeypatch.setenv("TLCOURSE_BACKBONE", "resnet18")
    config = get_config(root=course)
    assert (config.seed, config.backbone) == (7, "resnet18")


def test_blank_values_fall_back_to_defaults(course):
    config = get_config(env={"TLCOURSE_SEED": "  ", "TLCOURSE_BACKBONE": "", "TLCOURSE_DEVICE": " "}, root=course)
    assert (config.seed, config.backbone, config.device) == (0, "mobilenet_v2", "auto")


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("Yes", True), ("on", True),
                                             ("0", False), ("false", False), ("no", False), ("off", False)])
def test_flag_values(course, value, expected):
    """Every true/false setting takes the same words."""
    config = get_config(env={"TLCOURSE_SMOKE": value, "TLCOURSE_OFFLINE": value}, root=course)
    assert config.smoke is expected and config.offline is expected


def test_smoke_mode_shrinks_the_run(course):
    normal = get_config(env={}, root=course)
    smoke = get_config(env={"TLCOURSE_SMOKE": "1"}, root=course)
    assert normal.epochs(5) == 5 and normal.smoke_images_per_class is None
    assert smoke.epochs(5) == 1 and smoke.smoke_images_per_class == 80


def test_labels_csv_goes_to_the_output_folder_not_the_photos(course):
    config = get_config(env={}, root=course)
    assert config.labels_csv == course / "outputs" / "labels.csv"
    assert config.data_dir not in config.labels_csv.parents


def test_course_root_is_found_from_a_lesson_folder_and_below(course):
    lesson_dir = course / "notebooks"
    deeper = lesson_dir / "extra" / "deeper"
    deeper.mkdir(parents=True)
    assert course_root(course) == course
    assert course_root(lesson_dir) == course  # notebooks/ itself has no notebooks/ inside
    assert course_root(deeper) == course
    # A lesson running in notebooks/ and a terminal at the root see the same data folder.
    assert get_config(env={}, root=lesson_dir).data_dir == get_config(env={}, root=course).data_dir == course / "data"


def test_course_root_without_notebooks_is_the_start_folder(tmp_path, require):
    plain = tmp_path / "a" / "b"
    plain.mkdir(parents=True)
    # Only meaningful if no folder above tmp_path has a notebooks/ folder.
    require(not any((p / "notebooks").is_dir() for p in tmp_path.parents),
            "A temporary directory with no notebooks/ folder above it")
    assert course_root(plain) == plain
    assert get_config(env={}, root=plain).data_dir == plain / "data"


def test_course_root_defaults_to_the_current_folder(course, monkeypatch):
    monkeypatch.chdir(course / "notebooks")
    assert course_root() == course
    assert get_config(env={}).output_dir == course / "outputs"


def test_home_folder_is_expanded(course, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert get_config(env={"TLCOURSE_DATA": "~/photos"}, root=course).data_dir == tmp_path / "home" / "photos"


@pytest.mark.parametrize("name, value, words", [
    ("TLCOURSE_SEED", "abc", ["TLCOURSE_SEED", "integer", "'abc'"]),
    ("TLCOURSE_SEED", "1.5", ["TLCOURSE_SEED", "integer"]),
    ("TLCOURSE_DEVICE", "gpu", ["TLCOURSE_DEVICE", "auto, cpu, cuda or mps", "'gpu'"]),
    ("TLCOURSE_SMOKE", "maybe", ["TLCOURSE_SMOKE", "'maybe'", "1", "0"]),
    ("TLCOURSE_OFFLINE", "ture", ["TLCOURSE_OFFLINE", "'ture'", "1", "0"]),
    ("TLCOURSE_DASHBOARD", "fancy", ["TLCOURSE_DASHBOARD", "'fancy'", "auto, widgets or text"]),
])
def test_bad_values_give_clear_errors(course, name, value, words):
    with pytest.raises(ConfigError) as info:  # a TLCourseError: the command prints it as one line
        get_config(env={name: value}, root=course)
    for word in words:
        assert word in str(info.value)


def test_config_is_immutable(course):
    config = get_config(env={}, root=course)
    with pytest.raises(AttributeError):
        config.seed = 1  # type: ignore[misc]
