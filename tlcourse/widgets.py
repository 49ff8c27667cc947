"""Widgets for exploring: a photo tester, an augmentation explorer and a mistakes browser.

Each is one line in a lesson::

    PhotoTester(checkpoint_path, gradcam=True, mode=cfg.dashboard).show()
    AugmentationExplorer(photo_path, settings, mode=cfg.dashboard).show()
    MistakesBrowser(results, data.classes, exclusions=cfg.excluded_csv, mode=cfg.dashboard).show()

In JupyterLab, ``show()`` displays ipywidgets controls. Elsewhere (plain python,
a terminal, or a notebook run without a browser, as nbval does) it draws the same
content once as a static matplotlib figure and prints a table, so a lesson still
makes sense. ``mode`` chooses, as for the training dashboard: ``"widgets"``,
``"text"`` or ``"auto"`` (widgets inside a Jupyter kernel); lessons pass
``mode=cfg.dashboard`` (``TLCOURSE_DASHBOARD``), which headless runs set to ``text``.

Each widget keeps its state in plain Python attributes (``prediction``,
``tiles``, ``current``, ...) and has methods that do what its buttons do, so it
can be driven and checked without a browser. None of them writes into the photo
folder: the mistakes browser's marks go to the exclusion list in the output
folder (:mod:`tlcourse.exclusions`).
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from .calibration import Calibration, Verdict, verdict
from .dashboard import dashboard_mode
from .data import (CSVDataset, TransformSettings, to_rgb, denormalize, eval_transform, load_image, make_loader,
                   label_folder)
from .errors import ConfigError, DataError, ImageLoadError
from .exclusions import REASONS, ExclusionList, as_exclusion_list
from .gradcam import GradCAM, show_gradcam, upsample
from .models import eval_mode

#: Bar colours per class (label order), as in the lessons' figures.
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def _interactive(mode: str) -> bool:
    return dashboard_mode(mode) == "widgets"


def _jpeg(image: Image.Image, max_side: int | None = None, quality: int = 85) -> bytes:
    if max_side and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _img_tag(image: Image.Image, max_side: int, css_class: str) -> str:
    data = base64.b64encode(_jpeg(image, max_side)).decode("ascii")
    return f'<img class="{css_class}" src="data:image/jpeg;base64,{data}" style="max-width:{max_side}px">'


def _to_pil(x: torch.Tensor, settings: TransformSettings) -> Image.Image:
    """A normalised ``3 x H x W`` input as the photo the network sees."""
    array = (denormalize(x, settings).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)


# --------------------------------------------------------------------------- photo tester
@dataclass
class PhotoPrediction:
    """One photo and what the model says about it.

    Further results become further fields here, each drawn by one more section
    in :attr:`PhotoTester.sections` (as ``heatmap`` is by :func:`gradcam_section`).
    """

    source: str  # a file path or an uploaded file's name
    image: Image.Image  # the photo as the model got it before the transform: upright RGB
    verdict: Verdict  # (calibrated) probabilities, best guess, "unsure" below the calibration's threshold
    seen: Image.Image | None = None  # the network's input (resized, cropped), shown under the heatmap
    heatmap: np.ndarray | None = None  # Grad-CAM map of the best guess, seen's size, in [0, 1]

    @property
    def probabilities(self) -> dict[str, float]:
        """Class name -> probability, in label order."""
        return self.verdict.probabilities

    @property
    def label(self) -> str:
        return self.verdict.best_guess

    @property
    def confidence(self) -> float:
        return self.verdict.probability


def photo_section(prediction: PhotoPrediction) -> str:
    """HTML: the photo with its name."""
    return (f'<div style="margin-right:16px">{_img_tag(prediction.image, 320, "tlcourse-tested-photo")}'
            f'<div style="font-size:0.85em;color:#555">{html.escape(Path(prediction.source).name)}</div></div>')


def probabilities_section(prediction: PhotoPrediction) -> str:
    """HTML: one bar per class, the verdict in bold above them ("unsure (maybe ...)" below the threshold)."""
    rows = []
    for k, (name, p) in enumerate(prediction.probabilities.items()):
        rows.append(
            f'<div class="tlcourse-bar" style="display:flex;align-items:center;margin:4px 0">'
            f'<span style="width:90px">{html.escape(name)}</span>'
            f'<span style="width:200px;background:#eee;height:16px;display:inline-block">'
            f'<span style="width:{p * 100:.1f}%;background:{COLORS[k % len(COLORS)]};height:16px;'
            f'display:inline-block"></span></span><span style="margin-left:8px">{p:.1%}</span></div>')
    return (f'<div><div class="tlcourse-verdict" style="font-size:1.2em;margin-bottom:6px">'
            f'<b>{html.escape(prediction.verdict.describe())}</b></div>{"".join(rows)}</div>')


def _overlay(prediction: PhotoPrediction, ax) -> None:
    show_gradcam(np.asarray(prediction.seen) / 255.0, prediction.heatmap, ax=ax,
                 title=f"where it looked: {prediction.label}")


def gradcam_section(prediction: PhotoPrediction) -> str:
    """HTML: the photo as the network sees it, with the Grad-CAM map of the best guess on top
    (red: the regions that speak most for it). ``PhotoTester(..., gradcam=True)`` shows it."""
    if prediction.heatmap is None:
        return ""
    from matplotlib.figure import Figure  # not pyplot: the figure must not show up in the notebook too

    figure = Figure(figsize=(3.2, 3.4), dpi=100)
    _overlay(prediction, figure.add_subplot())
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return f'<div style="margin-left:16px">{_img_tag(Image.open(buffer), 320, "tlcourse-gradcam")}</div>'


class PhotoTester:
    """Try the model on any photo: upload one, or type the path of one on disk.

    ``model`` is an in-memory model (then pass ``class_names``; ``settings``
    default to the model's ``transform_settings``) or the path of a checkpoint
    saved with :func:`tlcourse.checkpoint.save_checkpoint`. The photo goes
    through the evaluation transform the model was trained with. Nothing is written anywhere.

    With a ``calibration`` (a checkpoint's own, when ``tlcourse train`` stored one) the
    probabilities are calibrated and the verdict is "unsure" below its threshold.
    ``gradcam=True`` adds :func:`gradcam_section`: where the model looked.
    """

    def __init__(self, model: nn.Module | str | Path, class_names: Sequence[str] | None = None,
                 settings: TransformSettings | None = None, mode: str = "auto",
                 calibration: Calibration | None = None, gradcam: bool = False):
        if isinstance(model, (str, Path)):
            from .checkpoint import load_checkpoint

            model, info = load_checkpoint(model)
            class_names = class_names or info["class_names"]
            calibration = calibration or Calibration.from_extra(info["extra"])
        if class_names is None:
            raise ConfigError("Pass class_names (in label order) with an in-memory model, "
                             "e.g. PhotoTester(model, data.classes).")
        self.model = model
        self.class_names = list(class_names)
        self.settings = settings or getattr(model, "transform_settings", TransformSettings())
        self.transform = eval_transform(self.settings)
        self.mode = mode
        self.calibration = calibration
        #: HTML sections drawn for a prediction, left to right; append one to show more.
        self.sections: list[Callable[[PhotoPrediction], str]] = [photo_section, probabilities_section]
        if gradcam:
            self.sections.append(gradcam_section)
        self.prediction: PhotoPrediction | None = None
        self.error: str | None = None
        self.widget: Any = None

    @torch.no_grad()
    def predict(self, photo: str | Path | Image.Image, source: str | None = None) -> PhotoPrediction:
        """Class probabilities for a photo (a path or a PIL image), and its Grad-CAM map when
        :func:`gradcam_section` is among the sections."""
        if isinstance(photo, Image.Image):
            image = to_rgb(photo)
        else:
            image = load_image(Path(photo).expanduser())  # raises ImageLoadError naming the file
            source = source or str(photo)
        x = self.transform(image).unsqueeze(0)
        with eval_mode(self.model):
            logits = self.model(x.to(next(self.model.parameters()).device))
        prediction = PhotoPrediction(source or "photo", image, verdict(logits[0], self.class_names, self.calibration))
        if gradcam_section in self.sections:  # it costs a backward pass: only when shown
            maps = GradCAM(self.model)(x, target=self.class_names.index(prediction.label))
            prediction.seen = _to_pil(x[0], self.settings)
            prediction.heatmap = upsample(maps, tuple(x.shape[-2:]))[0].cpu().numpy()
        return prediction

    def test_path(self, path: str | Path) -> PhotoPrediction | None:
        """What the path box does: predict the photo at ``path`` and show it (or the error)."""
        path = str(path).strip().strip("'\"")  # "Copy as path" on Windows adds quotes
        if not path:
            return self._set(None, "Type the path of a photo, e.g. ~/Pictures/lunch.jpg")
        try:
            return self._set(self.predict(path), None)
        except ImageLoadError as error:
            return self._set(None, str(error))

    def test_upload(self, content: bytes, name: str = "uploaded photo") -> PhotoPrediction | None:
        """What the upload button does: predict a photo given as the file's bytes."""
        try:
            with Image.open(io.BytesIO(bytes(content))) as img:
                image = to_rgb(img)
        except Exception as error:  # Pillow raises several types for a file that is not an image
            return self._set(None, f"Cannot read {name} as an image ({error}). Upload a JPEG or PNG photo.")
        return self._set(self.predict(image, source=name), None)

    def _set(self, prediction: PhotoPrediction | None, error: str | None) -> PhotoPrediction | None:
        self.prediction, self.error = prediction, error
        if self.widget is not None:
            self.result.value = self.result_html()
        return prediction

    def result_html(self) -> str:
        """The result area's HTML: the sections side by side, or the error."""
        if self.error:
            return f'<div class="tlcourse-error" style="color:#b00">{html.escape(self.error)}</div>'
        if self.prediction is None:
            return '<div style="color:#555">Upload a photo or type its path to see what the model says.</div>'
        parts = "".join(section(self.prediction) for section in self.sections)
        return f'<div style="display:flex;align-items:flex-start">{parts}</div>'

    def build(self) -> Any:
        """Create the ipywidgets panel (done by :meth:`show`; tests call it directly)."""
        import ipywidgets as w

        self.upload = w.FileUpload(accept="image/*", multiple=False, description="Upload",
                                   layout=w.Layout(width="130px"))
        self.path_box = w.Text(placeholder="or a path, e.g. ~/Pictures/lunch.jpg", continuous_update=False,
                               layout=w.Layout(width="360px"))
        self.path_button = w.Button(description="Predict", layout=w.Layout(width="90px"))
        self.result = w.HTML(self.result_html())
        self.upload.observe(self._on_upload, names="value")
        self.path_box.observe(lambda change: self.test_path(change["new"]), names="value")
        self.path_button.on_click(lambda _: self.test_path(self.path_box.value))
        self.widget = w.VBox([w.HBox([self.upload, self.path_box, self.path_button]), self.result])
        self.widget.add_class("tlcourse-photo-tester")
        self.result.value = self.result_html()
        return self.widget

    def _on_upload(self, change: dict) -> None:
        files = change["new"]
        if files:
            self.test_upload(files[-1]["content"], files[-1]["name"])

    def show(self, photo: str | Path | None = None) -> None:
        """Show the tester (widgets) or, without widgets, the prediction for ``photo`` as a figure."""
        if _interactive(self.mode):
            from IPython.display import display

            self.build()
            if photo is not None:
                self.path_box.value = str(photo)
            display(self.widget)
            return
        if photo is None:
            print("Run this in JupyterLab to upload a photo, or call show('path/to/photo.jpg').")
            return
        prediction = self.test_path(photo)
        if prediction is None:
            print(self.error)
            return
        self.figure(prediction)

    def figure(self, prediction: PhotoPrediction):
        """A static figure: the photo, the probability bars and, with a heatmap, the Grad-CAM overlay."""
        import matplotlib.pyplot as plt

        ratios = [1.2, 1] + ([1] if prediction.heatmap is not None else [])
        fig, axes = plt.subplots(1, len(ratios), figsize=(4.5 * len(ratios), 3.5),
                                 gridspec_kw={"width_ratios": ratios})
        ax_photo, ax_bars = axes[:2]
        ax_photo.imshow(prediction.image)
        ax_photo.set_title(Path(prediction.source).name, fontsize=9)
        ax_photo.axis("off")
        names, probs = list(prediction.probabilities), list(prediction.probabilities.values())
        ax_bars.barh(names, probs, color=[COLORS[k % len(COLORS)] for k in range(len(names))])
        for row, p in enumerate(probs):
            ax_bars.text(min(p, 0.8) + 0.02, row, f"{p:.1%}", va="center")
        ax_bars.set_xlim(0, 1)
        ax_bars.set_title(prediction.verdict.describe())
        if prediction.heatmap is not None:
            _overlay(prediction, axes[2])
        plt.tight_layout()
        plt.show()
        return fig


# --------------------------------------------------------------------------- augmentation explorer
@dataclass(frozen=True)
class Augmentation:
    """The training transform's random parts. The defaults are :func:`tlcourse.data.train_transform`'s."""

    scale: tuple[float, float] = (0.5, 1.0)  # share of the photo's area the random crop keeps
    flip: bool = True  # random left-right flip
    jitter: float = 0.0  # brightness, contrast and saturation change, up to +-this share (0: off)
    downscale: int = 0  # first shrink the short side to this many pixels, a low-resolution photo (0: off)

    def code(self, settings: TransformSettings = TransformSettings()) -> str:
        """Python source of the transform (``from torchvision.transforms import v2`` and ``import torch``)."""
        lines = []
        if self.downscale:
            lines.append(f"v2.Resize({self.downscale}, antialias=True),")
        scale = tuple(round(float(s), 4) for s in self.scale)
        lines.append(f"v2.RandomResizedCrop({settings.crop}, scale={scale!r}, antialias=True),")
        if self.flip:
            lines.append("v2.RandomHorizontalFlip(),")
        if self.jitter:
            j = round(float(self.jitter), 4)
            lines.append(f"v2.ColorJitter(brightness={j}, contrast={j}, saturation={j}),")
        lines += ["v2.ToImage(),", "v2.ToDtype(torch.float32, scale=True),",
                  f"v2.Normalize(mean={list(settings.mean)!r}, std={list(settings.std)!r}),"]
        return "v2.Compose([\n" + "".join(f"    {line}\n" for line in lines) + "])"

    def transform(self, settings: TransformSettings = TransformSettings()) -> v2.Compose:
        """The torchvision v2 transform these settings make (the same one :meth:`code` writes out)."""
        steps: list[Any] = []
        if self.downscale:
            steps.append(v2.Resize(self.downscale, antialias=True))
        steps.append(v2.RandomResizedCrop(settings.crop, scale=tuple(round(float(s), 4) for s in self.scale),
                                          antialias=True))
        if self.flip:
            steps.append(v2.RandomHorizontalFlip())
        if self.jitter:
            j = round(float(self.jitter), 4)
            steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
        steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                  v2.Normalize(mean=list(settings.mean), std=list(settings.std))]
        return v2.Compose(steps)


class AugmentationExplorer:
    """Sliders for the training transform's random parts, and a grid of what they do to one photo.

    ``photos`` is one photo path or a list (then a menu picks one). The grid
    shows ``n`` draws of the transform, de-normalised: what the network receives
    during training. The draws are seeded, so moving a slider changes only what
    that setting does; "New draws" picks other random numbers.
    """

    def __init__(self, photos: str | Path | Sequence[str | Path], settings: TransformSettings = TransformSettings(),
                 augmentation: Augmentation = Augmentation(), n: int = 8, columns: int = 4, seed: int = 0,
                 mode: str = "auto"):
        self.photos = [Path(photos)] if isinstance(photos, (str, Path)) else [Path(p) for p in photos]
        if not self.photos:
            raise DataError("Give at least one photo path.")
        self.settings, self.augmentation, self.n, self.columns, self.seed = settings, augmentation, n, columns, seed
        self.mode = mode
        self.photo_path = self.photos[0]
        self.widget: Any = None
        self.tiles: list[Image.Image] = []
        self.draw()

    @property
    def code(self) -> str:
        """The current settings' transform as Python source, to copy into a training script."""
        return self.augmentation.code(self.settings)

    @property
    def transform(self) -> v2.Compose:
        return self.augmentation.transform(self.settings)

    def update(self, **changes: Any) -> None:
        """Change settings (``scale``, ``flip``, ``jitter``, ``downscale``) and redraw, as the sliders do."""
        self.augmentation = Augmentation(**{**self.augmentation.__dict__, **changes})
        self.draw()

    def choose(self, photo: str | Path) -> None:
        """Show another photo."""
        self.photo_path = Path(photo)
        self.draw()

    def new_draws(self) -> None:
        """Other random crops, flips and colours for the same settings."""
        self.seed += 1
        self.draw()

    def draw(self) -> list[Image.Image]:
        """Apply the transform ``n`` times (seeded, without touching the global random state)."""
        photo = load_image(self.photo_path)
        transform = self.transform
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.tiles = [_to_pil(transform(photo), self.settings) for _ in range(self.n)]
        if self.widget is not None:
            self._refresh()
        return self.tiles

    def grid(self, gap: int = 4) -> Image.Image:
        """The tiles as one image, ``columns`` wide."""
        size = self.settings.crop
        rows = math.ceil(len(self.tiles) / self.columns)
        grid = Image.new("RGB", (self.columns * (size + gap) - gap, rows * (size + gap) - gap), "white")
        for k, tile in enumerate(self.tiles):
            grid.paste(tile, ((k % self.columns) * (size + gap), (k // self.columns) * (size + gap)))
        return grid

    def build(self) -> Any:
        """Create the ipywidgets panel (done by :meth:`show`; tests call it directly)."""
        import ipywidgets as w

        a = self.augmentation
        style = {"description_width": "150px"}
        wide = w.Layout(width="460px")
        self.scale_slider = w.FloatRangeSlider(value=a.scale, min=0.05, max=1.0, step=0.05, readout_format=".2f",
                                               description="crop keeps (area)", style=style, layout=wide,
                                               continuous_update=False)
        self.flip_box = w.Checkbox(value=a.flip, description="random left-right flip", indent=False)
        self.jitter_slider = w.FloatSlider(value=a.jitter, min=0.0, max=0.8, step=0.05, readout_format=".2f",
                                           description="colour jitter", style=style, layout=wide,
                                           continuous_update=False)
        self.downscale_slider = w.IntSlider(value=a.downscale, min=0, max=self.settings.resize, step=16,
                                            description="downscale to (px)", style=style, layout=wide,
                                            continuous_update=False)
        self.redraw_button = w.Button(description="New draws", icon="refresh")
        hint = w.HTML('<div style="color:#555;font-size:0.9em">crop keeps: the share of the photo\'s area in each '
                      'random crop · colour jitter: up to this much brighter/darker, more/less contrast and '
                      'colour · downscale: shrink the photo to this many pixels first, as a low-resolution '
                      'photo (0: off)</div>', layout=w.Layout(max_width="700px"))
        controls: list[Any] = [self.scale_slider, self.jitter_slider, self.downscale_slider,
                               w.HBox([self.flip_box, self.redraw_button]), hint]
        if len(self.photos) > 1:
            self.photo_menu = w.Dropdown(options=[(p.name, str(p)) for p in self.photos], value=str(self.photo_path),
                                         description="photo", style=style)
            self.photo_menu.observe(lambda c: self.choose(c["new"]), names="value")
            controls.insert(0, self.photo_menu)
        self.image = w.Image(format="jpeg", layout=w.Layout(max_width="100%", align_self="flex-start"))
        self.image.add_class("tlcourse-augment-grid")
        self.code_view = w.HTML()
        self.code_view.add_class("tlcourse-augment-code")
        self.scale_slider.observe(lambda c: self.update(scale=tuple(c["new"])), names="value")
        self.flip_box.observe(lambda c: self.update(flip=bool(c["new"])), names="value")
        self.jitter_slider.observe(lambda c: self.update(jitter=float(c["new"])), names="value")
        self.downscale_slider.observe(lambda c: self.update(downscale=int(c["new"])), names="value")
        self.redraw_button.on_click(lambda _: self.new_draws())
        self.widget = w.VBox([*controls, self.image, self.code_view])
        self.widget.add_class("tlcourse-augment")
        self._refresh()
        return self.widget

    def _refresh(self) -> None:
        self.image.value = _jpeg(self.grid())
        self.code_view.value = ('<div style="color:#555">The transform these settings make:</div>'
                                f'<pre style="user-select:text">{html.escape(self.code)}</pre>')

    def show(self) -> None:
        """Show the sliders and grid (widgets) or, without widgets, the grid as a figure and the code."""
        if _interactive(self.mode):
            from IPython.display import display

            display(self.build())
            return
        import matplotlib.pyplot as plt

        rows = math.ceil(len(self.tiles) / self.columns)
        fig, axes = plt.subplots(rows, self.columns, figsize=(3 * self.columns, 3 * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, tile in zip(axes.flat, self.tiles):
            ax.imshow(tile)
        fig.suptitle(f"{len(self.tiles)} random draws of the training transform: {self.photo_path.name}")
        plt.tight_layout()
        plt.show()
        print(self.code)


# --------------------------------------------------------------------------- mistakes browser
#: Sort orders: column, ascending.
SORTS = {"loss": ("loss", False), "confidence": ("confidence", True)}


def with_loss(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` (from :func:`tlcourse.evaluation.predict`) plus each photo's cross-entropy ``loss``.

    The loss of one photo is ``-log p(true class)``: large for confident mistakes,
    near 0 for confident right answers.
    """
    probs = results[[c for c in results.columns if c.startswith("prob_")]].to_numpy()
    p_true = probs[np.arange(len(results)), results["label"].to_numpy()]
    out = results.copy()
    out["loss"] = -np.log(np.clip(p_true, 1e-12, 1.0))
    out["confidence"] = probs.max(1)
    return out


class MistakesBrowser:
    """Step through predictions, worst first, and mark photos that do not belong in the data.

    ``results`` has one row per photo: ``file_path``, ``label``, ``pred`` and
    ``prob_<k>`` (as :func:`tlcourse.evaluation.predict` returns, plus the file
    paths). ``sort`` is ``"loss"`` (highest first: confident mistakes, then
    close calls) or ``"confidence"`` (lowest first: the closest calls). With
    ``exclusions`` (a CSV path, the course's is ``cfg.excluded_csv``, or an
    :class:`ExclusionList`) it offers to mark the photo shown as "leave out of the
    data"; the file itself is not touched.
    """

    def __init__(self, results: pd.DataFrame, class_names: Sequence[str], sort: str = "loss",
                 exclusions: ExclusionList | str | Path | None = None, mode: str = "auto"):
        missing = {"file_path", "label", "pred"} - set(results.columns)
        if missing:
            raise DataError(f"results lack column(s) {sorted(missing)}: add the photos' paths, e.g. "
                             "results['file_path'] = data.part('test')['file_path'].to_numpy()")
        self.results = with_loss(results.reset_index(drop=True))
        self.class_names = list(class_names)
        self.exclusions = as_exclusion_list(exclusions)
        self.mode = mode
        self.sort, self.true_class, self.pred_class = sort, None, None
        self.index = 0
        self.widget: Any = None
        self._apply()

    @classmethod
    def from_folder(cls, model: nn.Module, folder: str | Path, class_names: Sequence[str],
                    settings: TransformSettings | None = None, batch_size: int = 32,
                    **kwargs: Any) -> "MistakesBrowser":
        """Predict every photo in a folder of class subfolders (say, the field test) and browse the results.

        The folder's subfolder names must be among ``class_names`` (the model's classes).
        """
        from .evaluation import predict

        class_names = list(class_names)
        table = label_folder(folder, class_names)  # a folder of only some of the classes is fine
        settings = settings or getattr(model, "transform_settings", TransformSettings())
        results = predict(model, make_loader(CSVDataset(table, eval_transform(settings)), batch_size))
        results["file_path"] = table["file_path"].to_numpy()
        return cls(results, class_names, **kwargs)

    # ---- state
    def _apply(self) -> None:
        if self.sort not in SORTS:
            raise ConfigError(f"sort must be one of {list(SORTS)}, got {self.sort!r}")
        column, ascending = SORTS[self.sort]
        view = self.results
        if self.true_class is not None:
            view = view[view["label"] == self.class_names.index(self.true_class)]
        if self.pred_class is not None:
            view = view[view["pred"] == self.class_names.index(self.pred_class)]
        self.view = view.sort_values(column, ascending=ascending, kind="stable")
        self.index = 0
        self._refresh()

    def set_sort(self, sort: str) -> None:
        self.sort = sort
        self._apply()

    def set_filter(self, true_class: str | None = None, pred_class: str | None = None) -> None:
        """Show only photos of this true and/or predicted class (``None``: any)."""
        for name in (true_class, pred_class):
            if name is not None and name not in self.class_names:
                raise DataError(f"Unknown class {name!r}; the classes are {self.class_names}.")
        self.true_class, self.pred_class = true_class, pred_class
        self._apply()

    @property
    def current(self) -> pd.Series | None:
        """The row shown now (``None`` when the filter leaves nothing)."""
        return self.view.iloc[self.index] if len(self.view) else None

    def next(self) -> None:
        if self.index < len(self.view) - 1:
            self.index += 1
            self._refresh()

    def previous(self) -> None:
        if self.index > 0:
            self.index -= 1
            self._refresh()

    def is_marked(self) -> bool:
        row = self.current
        return row is not None and self.exclusions is not None and row["file_path"] in self.exclusions

    def mark(self, reason: str = REASONS[0]) -> None:
        """Put the current photo on the exclusion list (the file stays where it is)."""
        row = self.current
        if row is None or self.exclusions is None:
            return
        self.exclusions.mark(row["file_path"], reason, class_name=self.class_names[int(row["label"])])
        self._refresh()

    def unmark(self) -> None:
        row = self.current
        if row is not None and self.exclusions is not None:
            self.exclusions.unmark(row["file_path"])
            self._refresh()

    def describe(self, row: pd.Series) -> str:
        """One line about a row: true and predicted class, probability, loss, file name."""
        true, pred = self.class_names[int(row["label"])], self.class_names[int(row["pred"])]
        verdict = "right" if true == pred else "WRONG"
        return (f"true: {true} · predicted: {pred} ({row['confidence']:.1%}) · {verdict} · "
                f"loss {row['loss']:.3f} · {Path(row['file_path']).name}")

    # ---- widgets
    def build(self) -> Any:
        """Create the ipywidgets panel (done by :meth:`show`; tests call it directly)."""
        import ipywidgets as w

        anyone = [("any", "")] + [(name, name) for name in self.class_names]  # "" not None: None shows blank
        self.sort_menu = w.Dropdown(options=[("highest loss first", "loss"), ("least confident first", "confidence")],
                                    value=self.sort, description="order", layout=w.Layout(width="240px"))
        self.true_menu = w.Dropdown(options=anyone, value=self.true_class or "", description="true",
                                    layout=w.Layout(width="180px"))
        self.pred_menu = w.Dropdown(options=anyone, value=self.pred_class or "", description="predicted",
                                    layout=w.Layout(width="200px"))
        self.previous_button = w.Button(description="Previous", icon="arrow-left", layout=w.Layout(width="110px"))
        self.next_button = w.Button(description="Next", icon="arrow-right", layout=w.Layout(width="110px"))
        self.previous_button.add_class("tlcourse-previous")
        self.next_button.add_class("tlcourse-next")
        self.position = w.HTML()
        self.position.add_class("tlcourse-position")
        self.image = w.Image(format="jpeg", layout=w.Layout(align_self="flex-start"))  # its own size, not stretched
        self.image.add_class("tlcourse-mistake-photo")
        self.info = w.HTML()
        self.info.add_class("tlcourse-mistake-info")
        self.reason_menu = w.Dropdown(options=list(REASONS), value=REASONS[0], layout=w.Layout(width="200px"))
        self.mark_button = w.Button(layout=w.Layout(width="220px"))
        self.mark_button.add_class("tlcourse-mark")
        self.sort_menu.observe(lambda c: self.set_sort(c["new"]), names="value")
        self.true_menu.observe(lambda c: self.set_filter(c["new"] or None, self.pred_class), names="value")
        self.pred_menu.observe(lambda c: self.set_filter(self.true_class, c["new"] or None), names="value")
        self.previous_button.on_click(lambda _: self.previous())
        self.next_button.on_click(lambda _: self.next())
        self.mark_button.on_click(lambda _: self.unmark() if self.is_marked() else self.mark(self.reason_menu.value))
        marking = ([w.HTML("Leave out of the data:"), self.reason_menu, self.mark_button]
                   if self.exclusions is not None else [])
        self.widget = w.VBox([
            w.HBox([self.sort_menu, self.true_menu, self.pred_menu]),
            w.HBox([self.previous_button, self.next_button, self.position]),
            self.image, self.info, w.HBox(marking),
        ])
        self.widget.add_class("tlcourse-mistakes")
        self._refresh()
        return self.widget

    def _refresh(self) -> None:
        if self.widget is None:
            return
        row = self.current
        self.previous_button.disabled = row is None or self.index == 0
        self.next_button.disabled = row is None or self.index >= len(self.view) - 1
        self.mark_button.disabled = row is None
        if row is None:
            self.position.value = "no photos match this filter"
            self.image.value = b""
            self.info.value = ""
            return
        self.position.value = f"{self.index + 1} / {len(self.view)}"
        self.image.value = _jpeg(load_image(row["file_path"]), max_side=360)
        right = row["label"] == row["pred"]
        color = "#2ca02c" if right else "#d62728"
        self.info.value = f'<div style="color:{color};font-size:1.05em">{html.escape(self.describe(row))}</div>'
        reason = self.exclusions.reason(row["file_path"]) if self.exclusions is not None else None
        marked = reason is not None  # one read of the list per step
        if marked:
            self.info.value += (f'<div class="tlcourse-marked" style="color:#b00">left out of the data: '
                                f'{html.escape(reason)}</div>')
        self.mark_button.description = "Unmark (use it again)" if marked else "Mark: leave out"
        self.mark_button.button_style = "" if marked else "warning"

    def table(self, n: int = 10) -> pd.DataFrame:
        """The first ``n`` rows of the current view, readable."""
        rows = self.view.head(n)
        return pd.DataFrame({
            "photo": [Path(p).name for p in rows["file_path"]],
            "true": [self.class_names[int(k)] for k in rows["label"]],
            "predicted": [self.class_names[int(k)] for k in rows["pred"]],
            "confidence": rows["confidence"].round(3).to_numpy(),
            "loss": rows["loss"].round(3).to_numpy(),
        })

    def show(self, n: int = 5) -> None:
        """Show the browser (widgets) or, without widgets, a table and a figure of the first ``n`` photos."""
        if _interactive(self.mode):
            from IPython.display import display

            display(self.build())
            return
        import matplotlib.pyplot as plt

        order = "highest loss first" if self.sort == "loss" else "least confident first"
        print(f"{len(self.view)} photo(s), {order}:")
        print(self.table(max(n, 10)).to_string(index=False))
        rows = self.view.head(n)
        if len(rows) == 0:
            return
        fig, axes = plt.subplots(1, len(rows), figsize=(3 * len(rows), 3.4), squeeze=False)
        for ax, (_, row) in zip(axes[0], rows.iterrows()):
            ax.imshow(load_image(row["file_path"]))
            right = row["label"] == row["pred"]
            ax.set_title(f"true: {self.class_names[int(row['label'])]}\npredicted: "
                         f"{self.class_names[int(row['pred'])]} ({row['confidence']:.0%})",
                         color="tab:green" if right else "tab:red", fontsize=10)
            ax.axis("off")
        fig.suptitle(f"The first {len(rows)}, {order}")
        plt.tight_layout()
        plt.show()
