"""The augmentation explorer: sliders for the training transform's random parts, and what they do to a photo."""

from __future__ import annotations

import dataclasses
import html
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from torchvision.transforms import v2

from ..data import AugmentSettings, TransformSettings, load_image
from ..errors import DataError
from .common import interactive, jpeg_bytes, to_pil

class AugmentationExplorer:
    """Sliders for the training transform's random parts, and a grid of what they do to one photo. Taught in lesson 1.

    ``photos``: one photo path or a list (a menu picks one). The grid shows ``n`` seeded draws of the
    transform, de-normalised: what the network receives in training, starting from the course's own
    augmentation (``AugmentSettings()``). Moving a slider changes only what that setting does; "New
    draws" picks other random numbers."""

    def __init__(self, photos: str | Path | Sequence[str | Path], settings: TransformSettings = TransformSettings(),
                 augmentation: AugmentSettings = AugmentSettings(), n: int = 8, columns: int = 4, seed: int = 0,
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
        """The current settings' transform as Python source, with its imports, to copy into a training script."""
        return ("import torch\nfrom torchvision.transforms import v2\n\nfrom tlcourse.data import Downscale\n\n"
                f"transform = {self.augmentation.code(self.settings)}")

    @property
    def transform(self) -> v2.Compose:
        return self.augmentation.transform(self.settings)

    def update(self, **changes: Any) -> None:
        """Change :class:`AugmentSettings` fields (``scale``, ``flip``, ``brightness``, ``downscale_p``, ...)
        and redraw, as the sliders do."""
        self.augmentation = dataclasses.replace(self.augmentation, **changes)
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
            self.tiles = [to_pil(transform(photo), self.settings) for _ in range(self.n)]
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

        def slider(kind, value, low: float, high: float, description: str):
            return kind(value=value, min=low, max=high, step=0.05, readout_format=".2f", description=description,
                        style=style, layout=w.Layout(width="460px"), continuous_update=False)

        self.scale_slider = slider(w.FloatRangeSlider, a.scale, 0.05, 1.0, "crop keeps (area)")
        self.flip_box = w.Checkbox(value=bool(a.flip), description="random left-right flip", indent=False)
        self.jitter_slider = slider(w.FloatSlider, a.brightness, 0.0, 0.8, "colour jitter")
        self.downscale_slider = slider(w.FloatSlider, a.downscale_p, 0.0, 1.0, "downscale chance")
        self.factor_slider = slider(w.FloatRangeSlider, a.downscale, 0.05, 1.0, "downscale to (x side)")
        self.redraw_button = w.Button(description="New draws", icon="refresh")
        hint = w.HTML('<div style="color:#555;font-size:0.9em">crop keeps: the share of the photo\'s area in each '
                      'random crop · colour jitter: up to this much brighter/darker, more/less contrast and '
                      'colour · downscale: how often the photo is first shrunk to a random share of its '
                      'sides in this range and enlarged again, as a low-resolution photo (0: never)</div>', layout=w.Layout(max_width="700px"))
        controls: list[Any] = [self.scale_slider, self.jitter_slider, self.downscale_slider, self.factor_slider,
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
        self.flip_box.observe(lambda c: self.update(flip=0.5 if c["new"] else 0.0), names="value")
        self.jitter_slider.observe(lambda c: self.update(**dict.fromkeys(("brightness", "contrast", "saturation"),
                                                                         float(c["new"]))), names="value")
        self.downscale_slider.observe(lambda c: self.update(downscale_p=float(c["new"])), names="value")
        self.factor_slider.observe(lambda c: self.update(downscale=tuple(c["new"])), names="value")
        self.redraw_button.on_click(lambda _: self.new_draws())
        self.widget = w.VBox([*controls, self.image, self.code_view])
        self.widget.add_class("tlcourse-augment")
        self._refresh()
        return self.widget

    def _refresh(self) -> None:
        self.image.value = jpeg_bytes(self.grid())
        self.code_view.value = ('<div style="color:#555">The transform these settings make:</div>'
                                f'<pre style="user-select:text">{html.escape(self.code)}</pre>')

    def show(self) -> None:
        """Show the sliders and grid (widgets) or, without widgets, the grid as a figure and the code."""
        if interactive(self.mode):
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
