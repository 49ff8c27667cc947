"""Pretrained weights in the torch cache (``$TORCH_HOME/hub/checkpoints``), for lessons that run offline.

torchvision names its files after their sha256 (``mobilenet_v2-7ebf99e0.pth``): a download must match."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pooch
import requests
import torch
import torchvision

from .errors import DataError, DownloadError, WeightsUnavailableError
from .files import atomic_write, sha256_file

#: The backbones the course supports and tests (lesson 2 compares them). build_model builds other torchvision
#: classifiers too, untested: GoogLeNet and Inception v3 fail (auxiliary outputs in training mode).
SUPPORTED_BACKBONES = ("mobilenet_v2", "resnet18", "vgg11")

@dataclass
class WeightsResult:
    """What :func:`prefetch_weights` did for one backbone."""

    backbone: str
    path: Path
    action: str  # "downloaded", "installed", "already cached"
    sha256: str
    warning: str | None = None


def hash_prefix(file_name: str) -> str | None:
    """The sha256 prefix torchvision puts in a weights file name (``mobilenet_v2-7ebf99e0.pth`` -> ``7ebf99e0``),
    torch.hub's convention ``<name>-<first hex digits of the sha256>.<ending>``."""
    match = re.search(r"-([a-f0-9]*)\.", file_name)
    return match.group(1) if match else None


def weights_enum(backbone: str, weights: str | None = "DEFAULT"):
    """Return the torchvision weights enum member for ``backbone`` (``None`` for no weights)."""
    # Checked also for weights=None, so a typo in TLCOURSE_BACKBONE gets the same clear message.
    if backbone not in torchvision.models.list_models(module=torchvision.models):
        raise DataError(f"Unknown backbone {backbone!r}. Use one of the course's backbones, "
                        f"{', '.join(SUPPORTED_BACKBONES)} (other torchvision classification models are untested).")
    if weights is None:
        return None
    enum = torchvision.models.get_model_weights(backbone)
    try:
        return enum[weights]
    except KeyError:
        raise DataError(f"Unknown weights {weights!r} for {backbone}. Use one of: DEFAULT, "
                        f"{', '.join(member.name for member in enum)}, or None for random weights.") from None


def weights_path(weights) -> Path:
    """Where torchvision caches the file for ``weights``: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def load_state_dict(weights, timeout: float = 15.0, offline: bool = False) -> dict[str, torch.Tensor]:
    """Load the state dict for ``weights`` from the torch cache, downloading it unless ``offline``
    (giving up after ``timeout`` seconds); the error names the file and where it was looked for."""
    path = weights_path(weights)
    if not path.is_file():
        hint = (f"Pretrained weights {path.name} are not in the torch cache ({path.parent}, "
                f"from TORCH_HOME={os.environ.get('TORCH_HOME', '<unset, default ~/.cache/torch>')}). "
                f"Fix: run `tlcourse prefetch-weights` on a machine with internet, or copy {path.name} "
                f"into {path.parent}, or set TORCH_HOME to a folder whose hub/checkpoints/ holds it.")
        if offline:
            raise WeightsUnavailableError(hint + " (TLCOURSE_OFFLINE is set, so no download was tried.)")
        try:
            download_weights_file(weights.url, path, timeout=timeout, progress=False)
        except DownloadError as error:
            raise WeightsUnavailableError(f"{hint} (Download from {weights.url} failed: {error})") from error
    return torch.load(path, map_location="cpu", weights_only=True)


def verify_weights_file(path: str | Path, backbone: str) -> tuple[str, str | None]:
    """Check that ``path`` loads as a state dict that fits ``backbone``: ``(sha256, warning)``, the
    warning when the sha256 does not start with the prefix in the file name (not torchvision's file)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for damaged files
        raise DownloadError(f"{path} is not a readable PyTorch weights file ({error}).") from error
    if not isinstance(state, dict):
        raise DownloadError(f"{path} holds a {type(state).__name__}, not a state dict of weights.")
    try:
        torchvision.models.get_model(backbone, weights=None).load_state_dict(state)  # strict: every layer and shape
    except RuntimeError as error:
        raise DownloadError(f"{path} does not fit torchvision's {backbone}: "
                            f"{' '.join(str(error).splitlines()[:3])}") from error
    digest, expected = sha256_file(path), hash_prefix(path.name)
    if expected and not digest.startswith(expected):
        return digest, (
            f"{path.name}: its sha256 starts with {digest[:len(expected)]}, not {expected} as torchvision's file "
            f"name says, so it is not the file torchvision publishes (for example the course's offline {backbone} "
            f"weights, re-made from another source). It loads into {backbone} correctly and torchvision uses a "
            "cached file without checking its hash, so the lessons will use it; predictions and accuracies can "
            "differ slightly from torchvision's own weights.")
    return digest, None


def download_weights_file(url: str, target: Path, timeout: float = 30.0, progress: bool = True) -> None:
    """Download ``url`` to ``target`` (pooch's HTTP downloader, ``timeout`` per connection and read);
    the file gets its name only if its sha256 starts with the prefix in ``target``'s name."""
    target = Path(target)
    try:
        with atomic_write(target) as handle:
            pooch.HTTPDownloader(timeout=timeout, progressbar=progress)(url, handle, None)
            handle.flush()
            expected, digest = hash_prefix(target.name), sha256_file(handle.name)
            if expected and not digest.startswith(expected):
                raise DownloadError(f"{url} was rejected: its sha256 starts with {digest[:len(expected)]}, not "
                                    f"{expected}. Nothing was installed; try again, or install the file from a "
                                    "folder with --from DIR.")
    except requests.RequestException as error:
        raise DownloadError(f"Could not download {url}: {error}. Check the network connection, or copy the weights "
                            "from a machine that has them (its $TORCH_HOME/hub/checkpoints) with "
                            "`tlcourse prefetch-weights --from DIR`.") from error


def _install(found: Path, target: Path) -> str:
    if target.exists() and target.resolve() == found.resolve():
        return "already cached"
    with atomic_write(target) as handle, open(found, "rb") as source:
        shutil.copyfileobj(source, handle)
    return "installed"


def prefetch_weights(backbones: Iterable[str], source_dir: str | Path | None = None, timeout: float = 30.0,
                     progress: bool = True, offline: bool = False) -> list[WeightsResult]:
    """Put each backbone's default pretrained weights into the torch cache, verified (:func:`verify_weights_file`).

    Downloaded from torchvision's address unless cached (``offline``: a missing file is an error), or
    copied from ``source_dir`` (a USB stick, another machine's torch cache)."""
    results = []
    for backbone in backbones:
        enum = weights_enum(backbone)
        target = weights_path(enum)
        if source_dir is not None:
            folder = Path(source_dir)
            if not folder.is_dir():
                raise DownloadError(f"Folder not found: {folder}")
            found = next((f / target.name for f in (folder, folder / "checkpoints", folder / "hub" / "checkpoints")
                          if (f / target.name).is_file()), None)  # the folder, or a torch cache copied into it
            if found is None:
                raise DownloadError(
                    f"{target.name} (torchvision's file for {backbone}) is not in {folder} (also looked in its "
                    f"checkpoints/ and hub/checkpoints/). Copy it there from a machine that has it in "
                    f"$TORCH_HOME/hub/checkpoints, or download it from {enum.url}.")
            try:
                digest, warning = verify_weights_file(found, backbone)
            except DownloadError as error:
                raise DownloadError(f"{error} Nothing was installed.") from error
            results.append(WeightsResult(backbone, target, _install(found, target), digest, warning))
            continue
        action = "already cached"
        if not target.is_file():
            if offline:
                raise DownloadError(f"{target.name} for {backbone} is not cached and TLCOURSE_OFFLINE is set, so "
                                    "nothing is downloaded. Unset TLCOURSE_OFFLINE, or install it with --from DIR.")
            download_weights_file(enum.url, target, timeout=timeout, progress=progress)
            action = "downloaded"
        try:
            digest, warning = verify_weights_file(target, backbone)
        except DownloadError as error:
            if action == "downloaded":
                target.unlink(missing_ok=True)
            raise DownloadError(f"{error} The downloaded file was removed." if action == "downloaded" else str(error))
        results.append(WeightsResult(backbone, target, action, digest, warning))
    return results
