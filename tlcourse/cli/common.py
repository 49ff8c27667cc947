"""What every ``tlcourse`` command shares: exit statuses, the error line, the device, skipped photos."""

from __future__ import annotations

import sys

from ..config import get_config

EXIT_OK, EXIT_FAIL, EXIT_INTERRUPTED = 0, 1, 130


def err(message: str) -> None:
    """Print ``tlcourse: error: MESSAGE`` on stderr."""
    print(f"tlcourse: error: {message}", file=sys.stderr)


def device_for(preference: str | None):
    """The torch device for ``--device`` (or TLCOURSE_DEVICE); torch loads only for the commands that need it."""
    from ..training import choose_device

    return choose_device(preference or get_config().device)


def report_skipped(skipped) -> None:
    """Name each file a folder scan left out that looks meant as a photo, with the reason."""
    from ..data import worth_warning

    for item in worth_warning(skipped):
        print(f"skipped {item.path}: {item.reason}", file=sys.stderr)
