"""One home per idea (issue 20): the input transform comes from the model's weights, bad photos are
found before training, a photo deleted after the scan is one line, and the package's structure map."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import tlcourse
from tlcourse import cli
from tlcourse.data import TransformSettings, eval_transform, load_course_data, load_image
from tlcourse.errors import DataError
from tlcourse.models import build_model, weights_enum
from tlcourse.recipes import train_frozen

PACKAGE = Path(tlcourse.__file__).parent


def _copy_photos(data_dir: Path, root: Path, per_class: int = 6) -> Path:
    for name in ("dog", "hotdog"):
        (root / name).mkdir(parents=True)
        for path in sorted((data_dir / name).glob("*.jpg"))[:per_class]:
            shutil.copyfile(path, root / name / path.name)
    return root


# --------------------------------------------------------------------------- acceptance 2: one input size
def test_weights_transform_is_the_eval_transform(data_dir):
    """The trusted reference: torchvision's own preset of the weights gives the same input tensor."""
    weights = weights_enum("mobilenet_v2")
    settings = TransformSettings.from_weights(weights)
    assert (settings.resize, settings.crop, settings.interpolation) == (232, 224, "bilinear")
    for path in sorted((data_dir / "dog").glob("*.jpg"))[:3]:
        image = load_image(path)
        torch.testing.assert_close(eval_transform(settings)(image), weights.transforms()(image), atol=1e-5, rtol=0)


def test_lessons_way_and_shortest_way_get_the_models_input_size(data_dir, real_weights, tmp_path, one_torch_thread):
    folder = _copy_photos(data_dir, tmp_path / "photos", per_class=5)
    model = build_model(2, "mobilenet_v2")
    # The lessons' way: the settings of the weights, passed to the data.
    lessons = load_course_data(folder, TransformSettings.from_weights(weights_enum("mobilenet_v2")))
    # The shortest way a learner might write: no settings at all; the model's are used.
    shortest = load_course_data(folder)
    assert shortest.settings is None
    train_frozen(model, shortest, epochs=1, views=0, verbose=False)
    assert shortest.settings == lessons.settings == model.transform_settings
    assert shortest.loader("val").dataset[0][0].shape == lessons.loader("val").dataset[0][0].shape == (3, 224, 224)
    assert shortest.settings.resize == 232  # the weights' resize, not the ImageNet default 256


def test_data_built_for_other_settings_is_refused(data_dir, tmp_path):
    folder = _copy_photos(data_dir, tmp_path / "photos", per_class=5)
    model = build_model(2, "mobilenet_v2", weights=None)  # ImageNet defaults: resize 256
    data = load_course_data(folder, TransformSettings(resize=232, crop=224))
    with pytest.raises(DataError, match="model.transform_settings"):
        train_frozen(model, data, epochs=1, views=0, verbose=False)


def test_data_without_settings_names_the_fix(data_dir, tmp_path):
    data = load_course_data(_copy_photos(data_dir, tmp_path / "photos", per_class=5))
    with pytest.raises(DataError, match="model.transform_settings"):
        data.loader("train")


# --------------------------------------------------------------------------- bad photos found first
def test_course_data_skips_and_names_truncated_and_empty_photos(data_dir, tmp_path):
    folder = _copy_photos(data_dir, tmp_path / "photos", per_class=5)
    good = sorted((folder / "dog").glob("*.jpg"))[0]
    truncated = folder / "dog" / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with Image.open(truncated) as img:  # the header is fine: only decoding finds the damage
        assert img.size
    empty = folder / "hotdog" / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.warns(UserWarning) as caught:
        data = load_course_data(folder, TransformSettings())
    message = " ".join(str(w.message) for w in caught)
    assert "truncated.jpg" in message and "empty.jpg" in message
    assert not {"truncated.jpg", "empty.jpg"} & {Path(p).name for p in data.table["file_path"]}
    for part in ("train", "val", "test"):  # every remaining photo loads
        assert sum(len(y) for _, y in data.loader(part, batch_size=16)) == len(data.part(part))


# --------------------------------------------------------------------------- acceptance 4: a deleted photo
def test_train_names_a_photo_deleted_after_the_scan_in_one_line(data_dir, real_weights, output_dir, tmp_path,
                                                               monkeypatch, capsys, one_torch_thread):
    import tlcourse.data.course as course

    folder = _copy_photos(data_dir, tmp_path / "photos", per_class=5)
    victim = sorted((folder / "hotdog").glob("*.jpg"))[2]
    scan = course.scan_folder

    def scan_then_delete(*args, **kwargs):
        table = scan(*args, **kwargs)
        victim.unlink()  # the learner moves a photo away while training starts
        return table

    monkeypatch.setattr(course, "scan_folder", scan_then_delete)
    assert cli.main(["train", str(folder), "--epochs", "1", "--views", "0", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("tlcourse: error:")]
    assert len(errors) == 1 and str(victim) in errors[0], err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- acceptance 1 and 8: structure
def _imports(path: Path) -> tuple[set[str], list[str]]:
    """The tlcourse modules ``path`` imports (also inside functions), and private names it takes from them."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found, private = set(), []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            elif (node.module or "").startswith("tlcourse"):
                target = node.module
            else:
                continue
            for alias in node.names:
                name = f"{target}.{alias.name}"
                found.add(name if (PACKAGE.parent / name.replace(".", "/")).with_suffix(".py").exists()
                          or (PACKAGE.parent / name.replace(".", "/")).is_dir() else target)
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    private.append(f"{module} imports {alias.name} from {target}")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("tlcourse")}
    return {m for m in found if m != module}, private


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    graph, private = {}, []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        graph[module], taken = _imports(path)
        private += taken
    # A package's own __init__ re-exports its modules: importing the package means importing them.
    return graph, private


def layers(graph: dict[str, set[str]]) -> dict[str, int]:
    """Each module's layer: one above the highest module it imports (raises on a cycle)."""
    level: dict[str, int] = {}

    def visit(module: str, stack: tuple[str, ...]) -> int:
        if module in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(module):] + (module,)))
        if module not in level:
            below = [visit(m, stack + (module,)) for m in graph.get(module, ()) if m in graph
                     and not module.startswith(m + ".")]  # a submodule importing its package's siblings
            level[module] = 1 + max(below, default=-1)
        return level[module]

    for module in graph:
        visit(module, ())
    return level


def test_no_import_cycle_no_private_name_crossing_modules():
    graph, private = import_graph()
    by_layer: dict[int, list[str]] = {}
    for module, layer in layers(graph).items():
        by_layer.setdefault(layer, []).append(module.removeprefix("tlcourse."))
    for layer in sorted(by_layer):
        print(f"layer {layer}: {', '.join(sorted(by_layer[layer]))}")
    assert not private, private


def test_no_module_over_400_lines():
    lengths = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert max(lengths.values()) <= 400, sorted(lengths.items(), key=lambda kv: -kv[1])[:3]


#: The package's lines when issue 20 was filed; it must stay smaller (acceptance 1).
ISSUE_20_LINES = 5732
#: Features added after issue 20, left out of that comparison (grading's command is its cli/grade.py).
LATER_FEATURES = ("cut.py", "grading", "exercises.py", "checkers", "cli/grade.py")


def test_the_package_is_smaller_than_when_issue_20_was_filed():
    counted = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in LATER_FEATURES
               and p.relative_to(PACKAGE).as_posix() not in LATER_FEATURES]
    lines = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in counted}
    print(f"{sum(lines.values())} lines in {len(lines)} modules (limit {ISSUE_20_LINES - 1})")
    assert "recipes.py" in lines and "cli/model.py" in lines  # the measure still covers the whole package
    assert sum(lines.values()) < ISSUE_20_LINES, sorted(lines.items(), key=lambda kv: -kv[1])[:5]


def test_the_device_of_a_model_is_asked_in_one_place():
    text = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    assert text.count("parameters()).device") == 1
    assert "HASH_REGEX" not in text and ".container" not in text and "_GLOBAL_RNG" not in text
