"""What the widgets share: the display mode, class colours, and photos as JPEG bytes or HTML."""

from __future__ import annotations

import base64

from PIL import Image

from ..dashboard import dashboard_mode, jpeg_bytes, to_pil  # noqa: F401 - the widgets take them from here

#: Bar colours per class (label order), as in the lessons' figures.
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def interactive(mode: str) -> bool:
    return dashboard_mode(mode) == "widgets"


def img_tag(image: Image.Image, max_side: int, css_class: str) -> str:
    data = base64.b64encode(jpeg_bytes(image, max_side)).decode("ascii")
    return f'<img class="{css_class}" src="data:image/jpeg;base64,{data}" style="max-width:{max_side}px">'
