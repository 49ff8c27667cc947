"""The package's expected errors, each naming what is wrong and the fix. The ``tlcourse`` command
prints them as one line; anything else is a bug and keeps its traceback. Each also derives from the
built-in type callers caught before (``ValueError``, ``OSError`` ...)."""

from pathlib import Path


class TLCourseError(Exception):
    """Base of every error tlcourse raises for bad input or a machine that is not set up."""


class ConfigError(TLCourseError, ValueError):
    """A ``TLCOURSE_*`` setting has a value the course cannot use."""


class DataError(TLCourseError, ValueError):
    """A photo folder, labels table or split that training cannot use."""


class DataNotFoundError(TLCourseError, FileNotFoundError):
    """A folder or file the user pointed at does not exist."""


class ImageLoadError(TLCourseError, OSError):
    """An image file cannot be used. One-argument constructor: DataLoader workers re-raise it unchanged."""

    def __init__(self, message: str, path=None):
        super().__init__(message)
        self.path = None if path is None else Path(path)


class CheckpointError(TLCourseError, ValueError):
    """A checkpoint file is unreadable or does not fit the model it is loaded into."""


class DownloadError(TLCourseError, RuntimeError):
    """Downloading failed in a way the user has to fix (network, mirror, disk)."""


class WeightsUnavailableError(TLCourseError, RuntimeError):
    """Pretrained weights are neither cached nor downloadable."""


class DeviceError(TLCourseError, RuntimeError):
    """The device asked for (``TLCOURSE_DEVICE``) is not on this machine."""


class NonFiniteLossError(TLCourseError, FloatingPointError):
    """The training loss became NaN or infinite; ``history`` holds what was measured up to then."""

    history = None
