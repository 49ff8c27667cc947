"""Images: any photo file opened as 8-bit RGB, upright; and the check of one file (used by the folder scan).
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageLoadError

#: Images whose shortest side is below this many pixels are skipped: a 1x1 or 8x8 "photo"
#: is a tracking pixel or a broken thumbnail, and upscaled to 224 px it teaches the model nothing.
MIN_IMAGE_SIDE = 16

#: How thoroughly :func:`inspect_image` looks at each file, cheapest first (see its docstring).
CHECKS = ("none", "header", "decode")

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow image to 8-bit RGB, upright, transparency composited on white."""
    try:  # phones store portraits sideways plus a rotate tag
        img = ImageOps.exif_transpose(img)
    except Exception:  # a damaged EXIF block must not cost the learner the photo itself
        pass
    if img.mode in _SIXTEEN_BIT_MODES:  # Pillow's convert() would clip at 255 (a white photo): scale instead
        values = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in img.info:
        # On white, not dropping alpha: the hidden colour of transparent pixels is arbitrary (often black),
        # a frame the model could learn instead of the object.
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Open an image as 8-bit RGB, upright (EXIF), whatever its format and mode. Taught in lesson 1.

    16-bit images are scaled, not clipped; transparency is composited on white; animations give their first
    frame. Raises :class:`ImageLoadError` naming the file, the reason and the fix."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            return to_rgb(img)
    except FileNotFoundError:
        raise ImageLoadError(
            f"Image not found: {path}. If it is listed in a labels CSV, the folder changed since the CSV "
            "was made: recreate the CSV (tlcourse.data.create_csv).", path) from None
    except Image.DecompressionBombError as error:
        raise ImageLoadError(
            f"Cannot load {path}: {error} Shrink the image, or raise PIL.Image.MAX_IMAGE_PIXELS "
            "if you trust it.", path) from error
    except (OSError, ValueError, SyntaxError, struct.error, EOFError) as error:
        raise ImageLoadError(
            f"Cannot load image {path}: {error}. The file is empty, corrupt, truncated or not an image. "
            "Replace or remove it; check the whole folder first with "
            "tlcourse.verify.verify_folder(<data folder>) (or `tlcourse doctor`).", path) from error



def _too_large_reason(width: int, height: int) -> str | None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        return (f"too large: {width}x{height} = {width * height:,} pixels is over Pillow's decompression-bomb "
                f"limit of {limit:,} (PIL.Image.MAX_IMAGE_PIXELS); shrink it, e.g. to 2000 px on the long side")
    return None


def inspect_image(path: str | Path, check: str = "header") -> tuple[dict[str, object] | None, str | None]:
    """Look at one image file: ``(info, None)`` when it is usable, ``(None, reason)`` when not.

    ``check``: ``"none"`` (only that it is not empty), ``"header"`` (format and size: empty, not an image,
    smaller than :data:`MIN_IMAGE_SIDE`, over Pillow's decompression-bomb limit: skipped, not loaded) or
    ``"decode"`` (also the pixels, as :func:`load_image` converts them: corrupt and truncated files too)."""
    if check not in CHECKS:
        raise ValueError(f"check must be one of {CHECKS}, got {check!r}")
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        return None, f"unreadable: {error.strerror or error}"
    if size == 0:
        return None, "empty file: 0 bytes; copy the photo again"
    info: dict[str, object] = {"width": None, "height": None, "mode": None, "format": None}
    if check == "none":
        return info, None
    try:
        with warnings.catch_warnings():
            # Between 1x and 2x the limit Pillow only warns; the size check below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                info.update(width=width, height=height, mode=img.mode, format=img.format)
                too_large = _too_large_reason(width, height)
                if too_large:
                    return None, too_large
                if min(width, height) < MIN_IMAGE_SIDE:
                    return None, (f"too small: {width}x{height} px, the course needs at least {MIN_IMAGE_SIDE} px "
                                  "on the short side; probably a placeholder or a broken thumbnail")
                if check == "decode":  # draft(): libjpeg decodes at 1/8 size, still reading every byte
                    img.draft(None, (max(1, width // 8), max(1, height // 8)))
                    to_rgb(img)
    except Image.DecompressionBombError as error:  # over twice the limit: Pillow refuses to open it
        return None, (f"too large: {str(error).rstrip('.')} (PIL.Image.MAX_IMAGE_PIXELS); shrink it, "
                      "e.g. to 2000 px on the long side")
    except UnidentifiedImageError:
        return None, "not an image: unreadable content (corrupt, or not really a photo despite its ending); replace it"
    except (OSError, ValueError, SyntaxError, struct.error, EOFError) as error:  # Pillow's types for damaged data
        return None, f"corrupt or truncated: {error}; replace it with a good copy"
    return info, None
