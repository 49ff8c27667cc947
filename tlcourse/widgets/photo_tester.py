"""The photo tester: upload a photo or type its path, and see what the model says (and where it looked)."""

from __future__ import annotations

import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image
from torch import nn

from ..calibration import Calibration, Verdict, predict_photo
from ..checkpoint import load_checkpoint
from ..data import TransformSettings, load_image, to_rgb
from ..errors import ConfigError, ImageLoadError
from ..gradcam import GradCAM, show_gradcam, upsample
from .common import COLORS, img_tag, interactive, to_pil

@dataclass
class PhotoPrediction:
    """One photo and what the model says about it; a further result becomes a further field here, drawn
    by one more section in :attr:`PhotoTester.sections` (as ``heatmap`` is by :func:`gradcam_section`)."""

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


def photo_section(prediction: PhotoPrediction) -> str:
    """HTML: the photo with its name."""
    return (f'<div style="margin-right:16px">{img_tag(prediction.image, 320, "tlcourse-tested-photo")}'
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
    return f'<div style="margin-left:16px">{img_tag(Image.open(buffer), 320, "tlcourse-gradcam")}</div>'


class PhotoTester:
    """Try the model on any photo: upload one, or type the path of one on disk. Taught in lesson 5.

    ``model``: an in-memory model (then pass ``class_names``; ``settings`` default to its
    ``transform_settings``) or a checkpoint's path. The photo goes through the model's evaluation
    transform; nothing is written anywhere. With a ``calibration`` (a checkpoint's own, when ``tlcourse
    train`` stored one) the probabilities are calibrated and the verdict is "unsure" below its threshold.
    ``gradcam=True`` adds :func:`gradcam_section`: where the model looked."""

    def __init__(self, model: nn.Module | str | Path, class_names: Sequence[str] | None = None,
                 settings: TransformSettings | None = None, mode: str = "auto",
                 calibration: Calibration | None = None, gradcam: bool = False):
        if isinstance(model, (str, Path)):
            model, info = load_checkpoint(model)
            class_names = class_names or info["class_names"]
            calibration = calibration or Calibration.from_extra(info["extra"])
        if class_names is None:
            raise ConfigError("Pass class_names (in label order) with an in-memory model, "
                             "e.g. PhotoTester(model, data.classes).")
        self.model = model
        self.class_names = list(class_names)
        self.settings = settings or getattr(model, "transform_settings", TransformSettings())
        self.mode = mode
        self.calibration = calibration
        #: HTML sections drawn for a prediction, left to right; append one to show more.
        self.sections: list[Callable[[PhotoPrediction], str]] = [photo_section, probabilities_section]
        if gradcam:
            self.sections.append(gradcam_section)
        self.prediction: PhotoPrediction | None = None
        self.error: str | None = None
        self.widget: Any = None

    def predict(self, photo: str | Path | Image.Image, source: str | None = None) -> PhotoPrediction:
        """Class probabilities for a photo (a path or a PIL image), and its Grad-CAM map when
        :func:`gradcam_section` is among the sections."""
        if isinstance(photo, Image.Image):
            image = to_rgb(photo)
        else:
            image = load_image(Path(photo).expanduser())  # raises ImageLoadError naming the file
            source = source or str(photo)
        answer, x = predict_photo(self.model, image, self.class_names, self.settings, self.calibration)
        prediction = PhotoPrediction(source or "photo", image, answer)
        if gradcam_section in self.sections:  # it costs a backward pass: only when shown
            maps = GradCAM(self.model)(x, target=self.class_names.index(prediction.label))
            prediction.seen = to_pil(x[0], self.settings)
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
        if interactive(self.mode):
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
