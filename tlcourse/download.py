"""Getting the course's photos onto a machine, verified, from where they are published or a mirror.

The course has two sets (:data:`SETS`): the example photos it trains on and a field test of photos
from other sources, for evaluation only. Only their manifests ship with the package (class, file,
sha256 and a GitHub repository pinned to a commit per photo); :func:`download_data` gives one to
`pooch <https://www.fatiando.org/pooch>`_, which fetches each file and checks its sha256 before it
gets its name. Pretrained weights: :mod:`tlcourse.weights`."""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from urllib.parse import quote, urlsplit

import pandas as pd
import pooch
import requests
from tqdm.auto import tqdm

from .errors import DataError, DataNotFoundError, DownloadError
from .files import sha256_file

MANIFEST_FILE = Path(__file__).with_name("dogs_vs_hotdogs.tsv")
FIELD_TEST_MANIFEST = Path(__file__).with_name("field_test.tsv")
#: The course's sets: name -> (manifest, the sub-folder of a classroom mirror that serves it).
SETS = {"photos": (MANIFEST_FILE, ""), "field-test": (FIELD_TEST_MANIFEST, "field-test")}
MANIFEST_COLUMNS = ["class", "file", "sha256", "bytes", "source_repo", "commit", "original_path"]
RAW_GITHUB = "https://raw.githubusercontent.com/{source_repo}/{commit}/{path}"
#: HTTP statuses worth retrying: the server or a proxy is busy or briefly broken.
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
STAGING = ".tlcourse-download"  # pooch's temporary files live here, never beside the photos
_HEADERS = {"User-Agent": "tlcourse-download/2"}


def read_manifest(path: str | Path | None = None) -> pd.DataFrame:
    """Read a manifest TSV (default: the course's example set) and check it (:func:`check_manifest`)."""
    path = MANIFEST_FILE if path is None else Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"Manifest not found: {path}")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path} is not a tlcourse manifest: it lacks column(s) {missing}; "
                        f"expected tab-separated {MANIFEST_COLUMNS}.")
    return check_manifest(table, source=str(path))


def check_manifest(table: pd.DataFrame, source: str = "manifest") -> pd.DataFrame:
    """Validate a manifest table: safe class/file names, 64-hex sha256, no duplicate targets."""
    table = table.reset_index(drop=True).copy()
    table["bytes"] = pd.to_numeric(table["bytes"], errors="raise").astype("int64")
    table["sha256"] = table["sha256"].str.lower()
    for column in ("class", "file"):
        # A name with a slash or "..", or a hidden name, could write outside the class folder.
        bad = table[~table[column].str.fullmatch(r"[^/\\.][^/\\]*")]
        if len(bad):
            raise DataError(f"{source}: unsafe {column} name(s): {list(bad[column][:5])}")
    bad = table[~table["sha256"].str.fullmatch(r"[0-9a-f]{64}")]
    if len(bad):
        raise DataError(f"{source}: invalid sha256 for {list(bad['file'][:5])}")
    twice = table[table.duplicated(["class", "file"], keep=False)]
    if len(twice):
        raise DataError(f"{source}: files listed twice: {list(twice['file'][:5])}")
    return table


def published_url(row: pd.Series | dict) -> str:
    """Where GitHub serves one manifest row's file at its pinned commit (without a " (note)" annotation)."""
    path = re.sub(r"\s+\([^()]*\)$", "", row["original_path"].strip())
    return RAW_GITHUB.format(source_repo=row["source_repo"], commit=row["commit"], path=quote(path))


def _is_url(text: str) -> bool:
    return urlsplit(str(text)).scheme in {"http", "https"}


@dataclass
class DownloadReport:
    """What :func:`download_data` did."""

    dest: Path
    downloaded: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # "class/file" -> reason
    conflicts: dict[str, str] = field(default_factory=dict)  # present but different from the manifest
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.conflicts

    def summary(self) -> str:
        lines = [f"{len(self.downloaded)} downloaded in {self.seconds:.1f} s, {len(self.already_present)} already "
                 f"present and verified, {len(self.failed)} failed, in {self.dest}"]
        lines += [f"  failed: {name}: {why}" for name, why in list(self.failed.items())[:10]]
        absent = [why for why in self.failed.values() if "HTTP 404" in why or "not in the mirror folder" in why]
        if absent:  # running again cannot help: the source lacks these files
            lines.append(f"Fix: the source does not have {len(absent)} of these files. A classroom mirror holds "
                         "the photos as <mirror>/<class>/<file> and the field test as "
                         "<mirror>/field-test/<class>/<file>; ask for a complete one, or leave out --mirror.")
        if len(absent) < len(self.failed):
            lines.append("Fix: run the same command again; it resumes and fetches only what is missing.")
        lines += [f"  kept, but differs from the example set: {name}: {why}" for name, why in self.conflicts.items()]
        if self.conflicts:
            lines.append("Fix: these files are not the example set's; move or delete them and run again "
                         "(tlcourse never overwrites a file it did not write).")
        return "\n".join(lines)


class _Failed(Exception):
    """One file could not be fetched; ``kind``: unreachable, silent, transient or permanent."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


def _classify(error: Exception, url: str) -> _Failed:
    if isinstance(error, FileNotFoundError):
        return _Failed("permanent", f"not in the mirror folder ({url})")
    if isinstance(error, requests.HTTPError):
        status = error.response.status_code
        kind = "transient" if status in TRANSIENT_STATUS else "permanent"
        return _Failed(kind, f"HTTP {status} {error.response.reason} from {url}")
    if isinstance(error, requests.ConnectionError) and not isinstance(error, requests.Timeout):
        return _Failed("unreachable", f"cannot connect to {urlsplit(url).netloc}: {error}")
    if isinstance(error, requests.Timeout):
        return _Failed("silent", f"no answer in time from {url}")
    if isinstance(error, ValueError) and "hash" in str(error):  # pooch's check; a cut connection can cause it
        return _Failed("transient", f"sha256 mismatch from {url}: the file was rejected ({error})")
    return _Failed("transient", f"{type(error).__name__}: {error} ({url})")


def _check_mirror(mirror: str | Path | None) -> None:
    if mirror is not None and not _is_url(mirror) and not Path(mirror).is_dir():
        raise DownloadError(f"Mirror folder not found: {mirror}. Give an http(s):// address or a folder laid "
                            "out as <mirror>/<class>/<file> for the photos and <mirror>/field-test/<class>/<file> "
                            "for the field test (a copy of a finished data/ folder, with field-test/ copied into it).")


def _copy(url: str, output_file: str, _pooch: object) -> None:
    """A pooch downloader for a mirror folder on this machine (a USB stick)."""
    shutil.copyfile(url, output_file)


def download_data(dest: str | Path = "data", manifest: pd.DataFrame | str | Path | None = None,
                  mirror: str | Path | None = None, workers: int = 8, retries: int = 3, timeout: float = 15.0,
                  backoff: float = 0.5, progress: bool = True) -> DownloadReport:
    """Download the example set (or any ``manifest``) into ``dest/<class>/<file>``, verified by sha256.

    A file already there with the right sha256 is kept (resume); one with other content is never overwritten
    but reported in ``conflicts``. Transient failures (timeouts, cut connections, HTTP 5xx/429, a wrong hash)
    are retried ``retries`` times, waiting ``backoff`` seconds and doubling; ``timeout`` bounds each connection
    and read; an unreachable server raises :class:`DownloadError` after the first file's tries. ``mirror``:
    an ``http(s)://`` base URL or a local folder."""
    started, dest = time.perf_counter(), Path(dest)
    table = check_manifest(manifest) if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    _check_mirror(mirror)
    report, todo, urls = DownloadReport(dest=dest), [], {}
    for row in table.to_dict("records"):
        name = f"{row['class']}/{row['file']}"
        target = dest / name
        if not target.exists():
            todo.append(name)
            urls[name] = (published_url(row) if mirror is None else str(Path(mirror) / name) if not _is_url(mirror)
                          else f"{str(mirror).rstrip('/')}/{quote(name)}")
        elif target.is_file() and target.stat().st_size == row["bytes"] and sha256_file(target) == row["sha256"]:
            report.already_present.append(name)
        else:
            report.conflicts[name] = "its size or sha256 differs from the manifest"
    staging = dest / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # what a killed run left behind
    for name in set(table["class"]):  # made before the threads start: pooch's makedirs is not race-free
        (staging / name).mkdir(parents=True, exist_ok=True)
    store = pooch.create(path=staging, base_url="", registry={n: f"sha256:{h}" for n, h in
                         zip(table["class"] + "/" + table["file"], table["sha256"])}, urls=urls)
    fetcher = pooch.HTTPDownloader(timeout=timeout, headers=_HEADERS) if mirror is None or _is_url(mirror) else _copy
    abort = threading.Event()

    def fetch(name: str) -> None:
        for attempt in range(retries + 1):
            try:
                staged = store.fetch(name, downloader=fetcher)
                break
            except Exception as error:  # noqa: BLE001 - sorted into kinds; the user sees the reason
                failure = _classify(error, urls[name])
                if failure.kind == "permanent" or attempt == retries or abort.wait(backoff * 2**attempt):
                    raise failure from None
        if not abort.is_set():  # after Ctrl-C the run stops: no new files appear
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, dest / name)

    def record(name: str, error: BaseException | None) -> None:
        if error is not None and not isinstance(error, _Failed):
            raise error  # a full disk or a bug: not a download failure to list
        if error is None:
            report.downloaded.append(name)
        else:
            report.failed[name] = str(error)
        bar.update()

    logger, level = pooch.get_logger(), pooch.get_logger().level
    logger.setLevel(logging.WARNING)  # pooch logs a line per file; the bar says enough
    bar = tqdm(total=len(todo), desc="download", unit="file", disable=not progress or not todo)
    try:
        if todo:  # one file alone first: an unreachable server is known after its tries, in seconds
            try:
                fetch(todo[0])
                record(todo[0], None)
            except _Failed as error:
                if error.kind in ("unreachable", "silent"):
                    what = "cannot be reached" if error.kind == "unreachable" else "does not answer"
                    raise DownloadError(f"The server {what}: {error}. Check the network connection (or proxy "
                                        "settings), or copy the photos from a classroom mirror with --mirror "
                                        "URL_OR_FOLDER.") from None
                record(todo[0], error)
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="tlcourse-download") as pool:
            futures = {pool.submit(fetch, name): name for name in todo[1:]}
            try:
                for future in as_completed(futures):
                    record(futures[future], future.exception())
            except BaseException:
                abort.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        bar.close()
        logger.setLevel(level)
        shutil.rmtree(staging, ignore_errors=True)
    report.seconds = time.perf_counter() - started
    return report


def check_destinations(photos: str | Path, field_test: str | Path) -> None:
    """Refuse a field-test folder that is the photo folder, or inside it, or holds it: the lessons read
    every subfolder of the photo folder as a class, so it would be trained on."""
    a, b = Path(photos).expanduser().resolve(), Path(field_test).expanduser().resolve()
    if a == b or a in b.parents or b in a.parents:
        raise DownloadError(f"The field test's folder {field_test} and the photo folder {photos} overlap. The field "
                            "test is for evaluation only: give it a folder of its own beside the photos, such as "
                            "field-test/ (--field-test-dest, or the TLCOURSE_FIELD_TEST setting).")


def _mirror_of(mirror: str | Path | None, sub: str) -> str | Path | None:
    """Where a classroom mirror serves one set (``sub`` is "" for the photos, "field-test" for the field test)."""
    if mirror is None or not sub:
        return mirror
    return f"{str(mirror).rstrip('/')}/{sub}" if _is_url(mirror) else Path(mirror) / sub


def check_sets(dest: str | Path, field_test_dest: str | Path, sets: Iterable[str],
               mirror: str | Path | None = None) -> None:
    """Everything :func:`download_sets` can refuse before fetching a file: an unknown set, overlapping
    folders (:func:`check_destinations`), a mirror folder without one of the sets."""
    unknown = [name for name in sets if name not in SETS]
    if unknown:
        raise ValueError(f"unknown set(s) {unknown}: choose from {list(SETS)}")
    check_destinations(dest, field_test_dest)
    for name in sets:
        _check_mirror(_mirror_of(mirror, SETS[name][1]))


def download_sets(dest: str | Path, field_test_dest: str | Path, sets: Iterable[str] = tuple(SETS),
                  mirror: str | Path | None = None, manifests: dict[str, object] | None = None,
                  **options) -> dict[str, DownloadReport]:
    """Download the course's ``sets`` (default: both): the photos into ``dest``, the field test into
    ``field_test_dest``, a folder of its own (:func:`check_destinations`). ``mirror`` serves both: the photos
    at ``<mirror>/<class>/<file>``, the field test at ``<mirror>/field-test/<class>/<file>``. ``manifests``
    replaces a set's manifest (a table or a TSV); ``options`` go to :func:`download_data`."""
    sets, manifests = list(sets), manifests or {}
    check_sets(dest, field_test_dest, sets, mirror)
    folders = {"photos": dest, "field-test": field_test_dest}
    return {name: download_data(folders[name], manifest=manifests.get(name, SETS[name][0]),
                                mirror=_mirror_of(mirror, SETS[name][1]), **options) for name in sets}
