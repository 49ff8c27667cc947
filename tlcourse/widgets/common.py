"""What the widgets share: the display mode, class colours, and photos as JPEG bytes or HTML."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image

from ..dashboard import dashboard_mode
from ..data import TransformSettings, denormalize

#: Bar colours per class (label order), as in the lessons' figures.
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def interactive(mode: str) -> bool:
    return dashboard_mode(mode) == "widgets"


def jpeg_bytes(image: Image.Image, max_side: int | None = None, quality: int = 85) -> bytes:
    if max_side and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def img_tag(image: Image.Image, max_side: int, css_class: str) -> str:
    data = base64.b64encode(jpeg_bytes(image, max_side)).decode("ascii")
    return f'<img class="{css_class}" src="data:image/jpeg;base64,{data}" style="max-width:{max_side}px">'


def to_pil(x: torch.Tensor, settings: TransformSettings) -> Image.Image:
    """A normalised ``3 x H x W`` input as the photo the network sees."""
    array = (denormalize(x, settings).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)
