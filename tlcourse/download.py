"""Getting the course's material onto a machine: the example photos and the pretrained weights.

The example set (1,434 dog and hotdog photos) is not stored in this package:
only its *manifest* is (``dogs_vs_hotdogs.tsv``), one row per photo with its
class, file name, sha256 and where it is published (a public GitHub repository
pinned to a commit). :func:`download_data` fetches every photo, checks it
against its sha256 and lays the folder out as the lessons expect::

    data/dog/dog_000bec18....jpg
    data/hotdog/hotdog_2.jpg

Downloads run in parallel, are retried when a failure looks transient, write to
a hidden temporary name and are renamed only once verified (so a file under its
final name is always complete and correct), and resume: a photo already present
with the right sha256 is not fetched again.

A classroom mirror (``mirror=``) is an HTTP address or a local folder laid out
the same way as the result, ``<mirror>/<class>/<file>`` (a finished ``data/``
folder served with ``python -m http.server`` is one, and so is a copy of it on a
USB stick).

:func:`prefetch_weights` puts torchvision's pretrained weights into the torch
cache (``$TORCH_HOME/hub/checkpoints``), downloading them with torchvision's
hash check or installing them from a folder, so lessons then work offline.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import sys
import threading
import time
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlsplit
from urllib.request import Request, urlopen

import pandas as pd

#: The example set's manifest, shipped inside the package.
MANIFEST_FILE = Path(__file__).with_name("dogs_vs_hotdogs.tsv")
MANIFEST_COLUMNS = ["class", "file", "sha256", "bytes", "source_repo", "commit", "original_path"]
#: Where GitHub serves a file of a repository at a commit.
RAW_GITHUB = "https://raw.githubusercontent.com/{source_repo}/{commit}/{path}"

#: HTTP statuses worth retrying: the server or a proxy is busy or briefly broken.
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CHUNK = 64 * 1024
_TEMP_MARK = ".tlcourse-part"  # temporary files are ".<file>.<id>.tlcourse-part"
_USER_AGENT = "tlcourse-download/1"


class DownloadError(RuntimeError):
    """Downloading failed in a way the user has to fix (network, mirror, disk)."""


# --------------------------------------------------------------------------- manifest
def read_manifest(path: str | Path | None = None) -> pd.DataFrame:
    """Read a manifest TSV (default: the course's example set) and check its columns.

    Columns: ``class, file, sha256, bytes, source_repo, commit, original_path``
    (extra columns such as width/height are kept). ``original_path`` may end in
    an annotation in parentheses (``train/abc.jpg (breed=borzoi)``), which is
    not part of the published path.
    """
    path = MANIFEST_FILE if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Manifest not found: {path}")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} is not a tlcourse manifest: it lacks column(s) {missing}; "
                         f"expected tab-separated {MANIFEST_COLUMNS}.")
    return check_manifest(table, source=str(path))


def check_manifest(table: pd.DataFrame, source: str = "manifest") -> pd.DataFrame:
    """Validate a manifest table: safe class/file names, 64-hex sha256, no duplicate targets."""
    table = table.reset_index(drop=True).copy()
    table["bytes"] = pd.to_numeric(table["bytes"], errors="raise").astype("int64")
    table["sha256"] = table["sha256"].str.lower()
    safe = re.compile(r"^[^/\\]+$")
    for column in ("class", "file"):
        bad = table[~table[column].str.match(safe) | table[column].isin(["", ".", ".."])
                    | table[column].str.startswith(".")]
        if len(bad):
            # A name with a slash or "..", or a hidden name, could write outside the class folder.
            raise ValueError(f"{source}: unsafe {column} name(s): {list(bad[column][:5])}")
    bad_hash = table[~table["sha256"].str.fullmatch(r"[0-9a-f]{64}")]
    if len(bad_hash):
        raise ValueError(f"{source}: invalid sha256 for {list(bad_hash['file'][:5])}")
    duplicated = table[table.duplicated(["class", "file"], keep=False)]
    if len(duplicated):
        raise ValueError(f"{source}: files listed twice: {list(duplicated['file'][:5])}")
    return table


def published_path(original_path: str) -> str:
    """The path inside the source repository, without a trailing ``" (note)"`` annotation."""
    return re.sub(r"\s+\([^()]*\)$", "", original_path.strip())


def published_url(row: pd.Series | dict) -> str:
    """``https://raw.githubusercontent.com/<source_repo>/<commit>/<original_path>`` for one manifest row."""
    return RAW_GITHUB.format(source_repo=row["source_repo"], commit=row["commit"],
                             path=quote(published_path(row["original_path"])))


def source_for(row: pd.Series | dict, mirror: str | Path | None) -> str:
    """Where one file is fetched from: its published URL, ``<mirror>/<class>/<file>`` or a local path."""
    if mirror is None:
        return published_url(row)
    mirror = str(mirror)
    if _is_url(mirror):
        return f"{mirror.rstrip('/')}/{quote(row['class'])}/{quote(row['file'])}"
    return str(Path(mirror) / row["class"] / row["file"])


def _is_url(text: str) -> bool:
    return urlsplit(text).scheme in {"http", "https"}


# --------------------------------------------------------------------------- hashing
def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- progress
class TextProgress:
    """A dependency-free progress bar on stderr.

    On a terminal it redraws one line; in a log (CI, a notebook cell) it prints
    a line every 10% instead, so logs stay readable.
    """

    def __init__(self, total: int, label: str = "", stream=None, width: int = 30):
        self.total, self.label, self.width = total, label, width
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self.started = time.perf_counter()
        self._last_decile = -1
        self._lock = threading.Lock()

    def update(self, n: int = 1, note: str = "") -> None:
        with self._lock:
            self.done += n
            fraction = self.done / self.total if self.total else 1.0
            if self.tty:
                filled = int(self.width * fraction)
                bar = "#" * filled + "-" * (self.width - filled)
                end = "\n" if self.done >= self.total else ""
                self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {note:<30.30}{end}")
            else:
                decile = int(fraction * 10)
                if decile != self._last_decile:
                    self._last_decile = decile
                    self.stream.write(f"{self.label} {self.done}/{self.total} ({fraction:.0%})\n")
            self.stream.flush()


# --------------------------------------------------------------------------- downloading
@dataclass
class DownloadReport:
    """What :func:`download_data` did."""

    dest: Path
    downloaded: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # "class/file" -> reason
    conflicts: dict[str, str] = field(default_factory=dict)  # present but different from the manifest
    seconds: float = 0.0
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.conflicts

    def summary(self) -> str:
        mb = self.bytes / 1e6
        lines = [f"{len(self.downloaded)} downloaded ({mb:.1f} MB in {self.seconds:.1f} s), "
                 f"{len(self.already_present)} already present and verified, {len(self.failed)} failed, "
                 f"in {self.dest}"]
        for name, reason in list(self.failed.items())[:10]:
            lines.append(f"  failed: {name}: {reason}")
        if len(self.failed) > 10:
            lines.append(f"  ... and {len(self.failed) - 10} more")
        if self.failed:
            lines.append("Fix: run the same command again; it resumes and fetches only what is missing.")
        for name, reason in list(self.conflicts.items())[:10]:
            lines.append(f"  kept, but differs from the example set: {name}: {reason}")
        if self.conflicts:
            lines.append("Fix: these files are not the example set's; move or delete them and run again "
                         "(tlcourse never overwrites a file it did not write).")
        return "\n".join(lines)


class _Transient(Exception):
    """A failure that may go away if the same request is tried again."""


class _Permanent(Exception):
    """A failure that trying again will not fix (404, wrong bytes from a local mirror)."""


class _Unreachable(_Transient):
    """The server could not be connected to at all."""


class _NoAnswer(_Transient):
    """The server was connected to but did not answer in time, or the connection broke."""


class _Aborted(Exception):
    """The run is stopping (interrupt or unreachable server)."""


def _open(source: str, timeout: float):
    """Open ``source`` (URL or local path) for reading; classify failures as transient or not."""
    if not _is_url(source):
        try:
            return open(source, "rb")
        except FileNotFoundError:
            raise _Permanent(f"not in the mirror folder ({source})") from None
        except OSError as error:
            raise _Transient(f"cannot read {source}: {error}") from error
    try:
        return urlopen(Request(source, headers={"User-Agent": _USER_AGENT}), timeout=timeout)
    except HTTPError as error:
        kind = _Transient if error.code in TRANSIENT_STATUS else _Permanent
        raise kind(f"HTTP {error.code} {error.reason} from {source}") from None
    except URLError as error:
        # No connection at all (refused, no route, DNS): the server is unreachable.
        raise _Unreachable(f"cannot connect to {urlsplit(source).netloc}: {error.reason}") from None
    except (TimeoutError, socket.timeout) as error:
        raise _NoAnswer(f"no answer within {timeout:g} s from {source}") from error
    except (ConnectionError, http.client.HTTPException) as error:
        raise _NoAnswer(f"connection broken ({error!r}) for {source}") from error


def _fetch_one(row: dict, source: str, target: Path, timeout: float, abort: threading.Event) -> int:
    """Fetch one file to a temporary name beside ``target``, verify it, rename it. Returns its size."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}{_TEMP_MARK}")
    digest, size = hashlib.sha256(), 0
    try:
        with _open(source, timeout) as response, open(temp, "wb") as out:
            while True:
                if abort.is_set():
                    raise _Aborted()
                try:
                    chunk = response.read(_CHUNK)
                except (TimeoutError, socket.timeout) as error:
                    raise _NoAnswer(f"download stalled for {timeout:g} s: {source}") from error
                except (ConnectionError, http.client.HTTPException, OSError) as error:
                    raise _NoAnswer(f"connection broken ({error!r}): {source}") from error
                if not chunk:
                    break
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        if abort.is_set():
            raise _Aborted()
        if size != row["bytes"] or digest.hexdigest() != row["sha256"]:
            # Count a wrong hash as transient: a broken proxy or cut connection can cause it,
            # and the last attempt's reason is what the user sees.
            raise _Transient(f"sha256 mismatch: got {size} bytes with sha256 {digest.hexdigest()[:12]}..., "
                             f"expected {row['bytes']} bytes with sha256 {row['sha256'][:12]}... "
                             f"from {source}; the file was rejected")
        os.replace(temp, target)  # atomic: the final name only ever holds a verified file
        return size
    finally:
        temp.unlink(missing_ok=True)


def _fetch_with_retries(row: dict, source: str, target: Path, timeout: float, retries: int,
                        backoff: float, abort: threading.Event) -> int:
    for attempt in range(retries + 1):
        try:
            return _fetch_one(row, source, target, timeout, abort)
        except _Transient:
            if attempt == retries or abort.is_set():
                raise
            # Exponential backoff: 1x, 2x, 4x ... gives a busy server room to recover.
            if abort.wait(backoff * 2**attempt):
                raise _Aborted() from None
    raise AssertionError("unreachable")


def _remove_stale_temporaries(dest: Path, classes: Iterable[str]) -> None:
    """Delete temporary files a killed earlier run left behind (only ours: they carry our marker)."""
    for name in classes:
        folder = dest / name
        if folder.is_dir():
            for temp in folder.glob(f".*{_TEMP_MARK}"):
                temp.unlink(missing_ok=True)


def download_data(
    dest: str | Path = "data",
    manifest: pd.DataFrame | str | Path | None = None,
    mirror: str | Path | None = None,
    workers: int = 8,
    retries: int = 3,
    timeout: float = 15.0,
    backoff: float = 0.5,
    progress: bool = True,
    on_file: Callable[[str], None] | None = None,
) -> DownloadReport:
    """Download the example set (or any ``manifest``) into ``dest/<class>/<file>``, verified by sha256.

    - Files already in ``dest`` with the right sha256 are kept and not fetched
      (resume). A file with the right name but other content is never
      overwritten: it is reported in ``conflicts``.
    - Each file is written to a hidden temporary name and renamed only after
      its size and sha256 match the manifest.
    - Transient failures (timeouts, cut connections, HTTP 5xx/429, a wrong
      hash) are retried ``retries`` times with exponential backoff starting at
      ``backoff`` seconds; ``timeout`` bounds each connection attempt and each read.
    - If the server cannot be reached at all, :class:`DownloadError` is raised
      after the first file's retries (seconds), rather than trying every file.
    - ``mirror``: an ``http(s)://`` base URL or a local folder laid out as
      ``<mirror>/<class>/<file>``.
    - ``on_file`` is called with ``"class/file"`` after each verified download.

    On Ctrl-C, downloads in flight are discarded (nothing half-written stays)
    and ``KeyboardInterrupt`` propagates; run again to resume.
    """
    started = time.perf_counter()
    dest = Path(dest)
    if isinstance(manifest, pd.DataFrame):
        table = check_manifest(manifest)
    else:
        table = read_manifest(manifest)
    if mirror is not None and not _is_url(str(mirror)) and not Path(mirror).is_dir():
        raise DownloadError(f"Mirror folder not found: {mirror}. Give an http(s):// address or a folder "
                            "laid out as <mirror>/<class>/<file> (for example a copy of a finished data/ folder).")
    dest.mkdir(parents=True, exist_ok=True)
    report = DownloadReport(dest=dest)
    classes = sorted(set(table["class"]))
    _remove_stale_temporaries(dest, classes)

    todo: list[tuple[dict, str, Path]] = []
    for row in table.to_dict("records"):
        name = f"{row['class']}/{row['file']}"
        target = dest / row["class"] / row["file"]
        if target.exists():
            if target.is_file() and target.stat().st_size == row["bytes"] and sha256_file(target) == row["sha256"]:
                report.already_present.append(name)
            else:
                report.conflicts[name] = "its size or sha256 differs from the manifest"
            continue
        todo.append((row, source_for(row, mirror), target))

    bar = TextProgress(len(todo), "download") if progress and todo else None
    abort = threading.Event()

    def job(item: tuple[dict, str, Path]) -> int:
        return _fetch_with_retries(*item, timeout=timeout, retries=retries, backoff=backoff, abort=abort)

    def record(item: tuple[dict, str, Path], future: Future) -> None:
        row, source, _ = item
        name = f"{row['class']}/{row['file']}"
        try:
            report.bytes += future.result()
        except (_Unreachable, _NoAnswer) as error:
            if isinstance(error, _NoAnswer) and report.downloaded:
                # The server works but this file timed out: note it, keep going.
                report.failed[name] = str(error)
                if bar is not None:
                    bar.update(1, row["file"])
                return
            abort.set()  # every other file would fail the same way: stop now, say why
            what = "cannot be reached" if isinstance(error, _Unreachable) else "does not answer"
            raise DownloadError(
                f"The server {what}: {error}. Check the network connection (or proxy settings), "
                f"or copy the photos from a classroom mirror with --mirror URL_OR_FOLDER. "
                f"{len(report.downloaded)} file(s) were completed and are kept; run again to resume."
            ) from None
        except (_Transient, _Permanent) as error:
            report.failed[name] = str(error)
        else:
            report.downloaded.append(name)
            if on_file is not None:
                on_file(name)
        if bar is not None:
            bar.update(1, row["file"])

    if todo:
        executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="tlcourse-download")
        # The first file goes alone: if the server is unreachable, we learn it from one file's
        # retries (seconds) instead of from every file in the set.
        pending = {executor.submit(job, todo[0]): todo[0]}
        queued = deque(todo[1:])
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    record(pending.pop(future), future)
                while queued and len(pending) < max(1, workers) * 2:
                    item = queued.popleft()
                    pending[executor.submit(job, item)] = item
        except BaseException:
            # Ctrl-C or a fatal error: in-flight downloads see the flag and delete their temporaries.
            abort.set()
            for future in pending:
                future.cancel()
            raise
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
    report.seconds = time.perf_counter() - started
    return report


# --------------------------------------------------------------------------- pretrained weights
@dataclass
class WeightsResult:
    """What :func:`prefetch_weights` did for one backbone."""

    backbone: str
    path: Path
    action: str  # "downloaded", "installed", "already cached"
    sha256: str
    warning: str | None = None


def hash_prefix(file_name: str) -> str | None:
    """The sha256 prefix torchvision embeds in a weights file name (``mobilenet_v2-7ebf99e0.pth`` -> ``7ebf99e0``).

    This is what ``torch.hub`` checks with ``check_hash=True``, and it checks it
    only when it downloads: a file already in the cache is used as it is.
    """
    import torch.hub

    match = torch.hub.HASH_REGEX.search(file_name)
    return match.group(1) if match else None


def verify_weights_file(path: str | Path, backbone: str) -> tuple[str, str | None]:
    """Check that ``path`` holds weights for ``backbone``: it must load as a state dict that fits the model.

    Returns ``(sha256, warning)``; ``warning`` explains a sha256 that does not
    start with the prefix in the file name (the file is then not the one
    torchvision publishes, although it fits the model). Raises ``ValueError``
    for a file that is not usable.
    """
    import torch
    import torchvision

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for damaged files
        raise ValueError(f"{path} is not a readable PyTorch weights file ({error}).") from error
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of weights.")
    model = torchvision.models.get_model(backbone, weights=None)
    try:
        model.load_state_dict(state)  # strict: every layer present, every shape right
    except RuntimeError as error:
        first = str(error).splitlines()[0:3]
        raise ValueError(f"{path} does not fit torchvision's {backbone}: {' '.join(first)}") from error
    digest = sha256_file(path)
    expected = hash_prefix(path.name)
    warning = None
    if expected and not digest.startswith(expected):
        warning = (
            f"{path.name}: its sha256 starts with {digest[:len(expected)]}, not {expected} as torchvision's "
            f"file name says, so it is not the file torchvision publishes (for example the course's offline "
            f"{backbone} weights, re-made from another source). It loads into {backbone} correctly and "
            f"torchvision uses a cached file without checking its hash, so the lessons will use it; "
            f"predictions and accuracies can differ slightly from torchvision's own weights."
        )
    return digest, warning


def _install_atomically(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}{_TEMP_MARK}")
    try:
        shutil.copyfile(source, temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _find_in_folder(folder: Path, file_name: str) -> Path | None:
    """``file_name`` directly in ``folder`` or in a copied torch cache inside it (``hub/checkpoints``)."""
    for candidate in (folder / file_name, folder / "checkpoints" / file_name,
                      folder / "hub" / "checkpoints" / file_name):
        if candidate.is_file():
            return candidate
    return None


def download_weights_file(url: str, target: Path, timeout: float = 30.0, progress: bool = True) -> None:
    """Download ``url`` to ``target`` with ``torch.hub``'s own downloader and hash check.

    ``torch.hub.download_url_to_file`` writes to a temporary file, checks that
    its sha256 starts with the prefix in ``target``'s name and only then moves it
    into place. It has no timeout of its own, so the socket default is set for
    the call (a dead network fails after ``timeout`` seconds instead of hanging).
    """
    import torch.hub

    target.parent.mkdir(parents=True, exist_ok=True)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=hash_prefix(target.name), progress=progress)
    except RuntimeError as error:  # torch.hub's "invalid hash value"
        raise DownloadError(f"{url} was rejected: {error}. Nothing was installed; try again, "
                            "or install the file from a folder with --from DIR.") from error
    except (URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(
            f"Could not download {url}: {reason}. Check the network connection, or copy the weights from "
            f"a machine that has them (its $TORCH_HOME/hub/checkpoints) with "
            f"`tlcourse prefetch-weights --from DIR`."
        ) from error
    finally:
        socket.setdefaulttimeout(old)


def prefetch_weights(
    backbones: Iterable[str],
    source_dir: str | Path | None = None,
    timeout: float = 30.0,
    progress: bool = True,
) -> list[WeightsResult]:
    """Put each backbone's default pretrained weights into the torch cache, verified.

    Without ``source_dir`` the file is downloaded from torchvision's address
    (hash-checked by ``torch.hub``) unless it is already cached. With
    ``source_dir`` it is copied from that folder (a USB stick, or another
    machine's ``$TORCH_HOME`` or ``hub/checkpoints``). Either way the file must
    load into the backbone; see :func:`verify_weights_file`.
    """
    from .models import weights_enum, weights_path

    results = []
    for backbone in backbones:
        enum = weights_enum(backbone)
        target = weights_path(enum)
        if source_dir is not None:
            folder = Path(source_dir)
            if not folder.is_dir():
                raise DownloadError(f"Folder not found: {folder}")
            found = _find_in_folder(folder, target.name)
            if found is None:
                raise DownloadError(
                    f"{target.name} (torchvision's file for {backbone}) is not in {folder} "
                    f"(also looked in its checkpoints/ and hub/checkpoints/). Copy it there from a machine "
                    f"that has it in $TORCH_HOME/hub/checkpoints, or download it from {enum.url}."
                )
            try:
                digest, warning = verify_weights_file(found, backbone)
            except ValueError as error:
                raise DownloadError(f"{error} Nothing was installed.") from error
            if target.exists() and target.resolve() == found.resolve():
                action = "already cached"
            else:
                _install_atomically(found, target)
                action = "installed"
            results.append(WeightsResult(backbone, target, action, digest, warning))
            continue
        if target.is_file():
            digest, warning = verify_weights_file(target, backbone)
            results.append(WeightsResult(backbone, target, "already cached", digest, warning))
            continue
        if os.environ.get("TLCOURSE_OFFLINE", "").lower() in {"1", "true", "yes"}:
            raise DownloadError(f"{target.name} for {backbone} is not cached and TLCOURSE_OFFLINE is set, so "
                                "nothing is downloaded. Unset TLCOURSE_OFFLINE, or install it with --from DIR.")
        download_weights_file(enum.url, target, timeout=timeout, progress=progress)
        try:
            digest, warning = verify_weights_file(target, backbone)
        except ValueError as error:
            target.unlink(missing_ok=True)
            raise DownloadError(f"{error} The downloaded file was removed.") from error
        results.append(WeightsResult(backbone, target, "downloaded", digest, warning))
    return results
