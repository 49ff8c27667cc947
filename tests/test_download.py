"""``tlcourse download-data`` and ``prefetch-weights`` against local servers and folders (never the internet).

A copy of a small subset of the real example set is served by an HTTP server on
127.0.0.1 in a thread; the server counts requests per file and can fail, cut,
corrupt or hold back responses, so the real download code is tested through
``--mirror`` on full downloads, interruptions and resumes, corrupted files,
transient failures and unreachable servers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import torch

from tlcourse import cli
from tlcourse import download
from tlcourse.download import (FIELD_TEST_MANIFEST, MANIFEST_FILE, STAGING, DownloadError, download_data,
                               download_sets, published_url, read_manifest)
from tlcourse.weights import download_weights_file, hash_prefix, prefetch_weights

ROOT = Path(__file__).resolve().parents[1]
MOBILENET = "mobilenet_v2-7ebf99e0.pth"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- a controllable loopback server
class MirrorServer:
    """``python -m http.server`` on 127.0.0.1 serving ``root``, with faults a test can switch on.

    - ``fail[path] = n``: answer the first ``n`` requests for ``path`` with HTTP 503;
    - ``cut[path] = n``: the first ``n`` times, announce the full length but send half and close;
    - ``corrupt``: paths always served with the right length but wrong bytes;
    - ``hold_after = n``: requests after the ``n``-th wait until ``release`` is set.
    """

    def __init__(self, root: Path):
        self.root = root
        self.requests: Counter[str] = Counter()
        self.fail: dict[str, int] = {}
        self.cut: dict[str, int] = {}
        self.corrupt: set[str] = set()
        self.hold_after: int | None = None
        self.release = threading.Event()
        self.held = 0
        self.lock = threading.Lock()
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                path = self.path.lstrip("/")
                with server.lock:
                    server.requests[path] += 1
                    count = sum(server.requests.values())
                    hold = server.hold_after is not None and count > server.hold_after
                    if hold:
                        server.held += 1
                if hold:
                    server.release.wait(30)  # bounded: a test that forgets to release still ends
                with server.lock:
                    failing = server.fail.get(path, 0) > 0
                    if failing:
                        server.fail[path] -= 1
                    cutting = server.cut.get(path, 0) > 0
                    if cutting:
                        server.cut[path] -= 1
                if failing:
                    self.send_error(503, "busy")
                    return
                file = server.root / path
                if not file.is_file():
                    self.send_error(404)
                    return
                body = file.read_bytes()
                if path in server.corrupt:
                    body = bytes(b ^ 0xFF for b in body)  # same length, wrong content
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if cutting else body)
                if cutting:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def subset(tmp_path, data_dir) -> tuple[pd.DataFrame, Path, Path]:
    """10 real photos (5 per class) copied into a mirror folder, their manifest rows and a TSV of them."""
    manifest = read_manifest()
    rows = pd.concat([manifest[manifest["class"] == c].head(5) for c in ("dog", "hotdog")]).reset_index(drop=True)
    mirror = tmp_path / "mirror"
    for row in rows.itertuples():
        (mirror / row[1]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir / row[1] / row.file, mirror / row[1] / row.file)
    tsv = tmp_path / "subset.tsv"
    rows.to_csv(tsv, sep="\t", index=False)
    return rows, mirror, tsv


@pytest.fixture
def field_subset(subset, require) -> tuple[pd.DataFrame, Path]:
    """6 real field-test photos (3 per class) in the mirror's field-test/ folder, their rows and a TSV of them."""
    source = Path(os.environ.get("TLCOURSE_FIELD_TEST", ROOT / "field-test"))
    require((source / "dog").is_dir() and (source / "hotdog").is_dir(), f"The field-test folder {source}")
    manifest = read_manifest(FIELD_TEST_MANIFEST)
    rows = pd.concat([manifest[manifest["class"] == c].head(3) for c in ("dog", "hotdog")]).reset_index(drop=True)
    for row in rows.itertuples():
        (subset[1] / "field-test" / row[1]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / row[1] / row.file, subset[1] / "field-test" / row[1] / row.file)
    tsv = subset[2].with_name("field-subset.tsv")
    rows.to_csv(tsv, sep="\t", index=False)
    return rows, tsv


@pytest.fixture
def small_sets(monkeypatch, subset, field_subset):
    """The course's two sets, cut down to the subsets the mirror holds (what the CLI fetches by default)."""
    monkeypatch.setitem(download.SETS, "photos", (subset[2], ""))
    monkeypatch.setitem(download.SETS, "field-test", (field_subset[1], "field-test"))
    return subset[0], field_subset[0]


@pytest.fixture
def server(subset):
    srv = MirrorServer(subset[1])
    yield srv
    srv.close()


def paths(rows: pd.DataFrame) -> list[str]:
    return [f"{c}/{f}" for c, f in zip(rows["class"], rows["file"])]


def assert_complete(dest: Path, rows: pd.DataFrame) -> None:
    for row in rows.itertuples():
        target = dest / row[1] / row.file
        assert target.is_file(), target
        assert sha256(target) == row.sha256
    assert leftovers(dest) == []


def leftovers(dest: Path) -> list[Path]:
    """Anything under dest that is not a photo under its final name (<class>/<file>): temporaries, partial files."""
    return sorted(p for p in dest.rglob("*") if p.is_file()
                  and (len(p.relative_to(dest).parts) != 2 or p.name.startswith((".", "tmp"))))


# --------------------------------------------------------------------------- the manifest
def test_packaged_manifest_is_the_example_set():
    table = read_manifest()
    assert len(table) == 1434
    assert table["class"].value_counts().to_dict() == {"dog": 717, "hotdog": 717}


def test_packaged_manifest_lists_the_photos_on_disk(data_dir):
    """Checked unconditionally against the photos the tests use (data_dir skips where they are missing)."""
    table = read_manifest()
    for row in pd.concat([table.head(3), table.tail(3)]).itertuples():
        assert sha256(data_dir / row[1] / row.file) == row.sha256


def test_published_url_is_pinned_to_the_commit_without_the_annotation():
    table = read_manifest()
    dog = table[table["class"] == "dog"].iloc[0]
    url = published_url(dog)
    assert url.startswith(f"https://raw.githubusercontent.com/{dog['source_repo']}/{dog['commit']}/")
    assert "(" not in url and " " not in url  # "train/x.jpg (breed=...)" -> "train/x.jpg"
    assert url.endswith(dog["original_path"].split(" (")[0])
    hotdog = table[table["class"] == "hotdog"].iloc[0]
    assert published_url(hotdog).endswith("/" + hotdog["original_path"])


def test_packaged_field_test_manifest_is_the_field_test(require):
    """Same columns as the training set's, 50 + 50 photos, each pinned to a commit, hashes as on disk."""
    table = read_manifest(FIELD_TEST_MANIFEST)
    assert list(table.columns) == list(read_manifest().columns)
    assert table["class"].value_counts().to_dict() == {"dog": 50, "hotdog": 50}
    assert table["commit"].str.fullmatch(r"[0-9a-f]{40}").all()
    assert all(published_url(row).startswith("https://raw.githubusercontent.com/") for _, row in table.iterrows())
    source = Path(os.environ.get("TLCOURSE_FIELD_TEST", ROOT / "field-test"))
    require((source / "dog").is_dir(), f"The field-test folder {source}")
    for row in table.itertuples():  # all 100 (3 MB): the manifest is what a learner's download is checked against
        assert sha256(source / row[1] / row.file) == row.sha256, row.file


def test_manifest_with_unsafe_names_is_refused(tmp_path, subset):
    rows = subset[0].copy()
    rows.loc[0, "file"] = "../escape.jpg"
    with pytest.raises(ValueError, match="unsafe file"):
        download_data(tmp_path / "d", manifest=rows, mirror=subset[1], progress=False)


# --------------------------------------------------------------------------- downloads over HTTP
def test_full_download_through_the_cli(tmp_path, subset, server, capsys):
    rows, _, tsv = subset
    dest = tmp_path / "data"
    code = cli.main(["download-data", "--dest", str(dest), "--mirror", server.url, "--manifest", str(tsv)])
    assert code == 0
    assert_complete(dest, rows)
    assert sorted(p.name for p in dest.iterdir()) == ["dog", "hotdog"]
    assert server.requests == Counter({p: 1 for p in paths(rows)})
    assert "10 downloaded" in capsys.readouterr().out


def test_second_run_fetches_nothing(tmp_path, subset, server):
    rows, _, _ = subset
    dest = tmp_path / "data"
    first = download_data(dest, manifest=rows, mirror=server.url, progress=False)
    assert len(first.downloaded) == 10 and first.ok
    server.requests.clear()
    second = download_data(dest, manifest=rows, mirror=server.url, progress=False)
    assert second.downloaded == [] and sorted(second.already_present) == sorted(paths(rows))
    assert server.requests == Counter()


def test_interrupted_download_resumes_without_refetching(tmp_path, subset, server):
    """Ctrl-C a real ``tlcourse download-data`` mid-run, then run again."""
    rows, _, tsv = subset
    dest = tmp_path / "data"
    server.hold_after = 4  # the 5th request onwards waits: the run is caught mid-way
    process = subprocess.Popen(
        [sys.executable, "-m", "tlcourse", "download-data", "--dest", str(dest), "--mirror", server.url,
         "--manifest", str(tsv), "--workers", "2", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        # Ctrl-C as a person's terminal sends it: a shell's background job (`bash .ci/run &`) starts with
        # SIGINT ignored, and the child would inherit that and never see the interrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120  # every wait is bounded: a stuck client fails the test, not the suite
        while server.held == 0:  # wait until a request is held
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the client never reached the held request"
            server.release.wait(0.05)
        # Let the 4 answered downloads get their final names; files are tiny, but do not guess: poll.
        while len([p for p in dest.glob("*/*.jpg")]) < 4:
            assert time.monotonic() < deadline, "the first 4 downloads never finished"
            server.release.wait(0.05)
        process.send_signal(signal.SIGINT)
        server.release.set()  # held requests now answer; the interrupted client must discard them
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "resume" in err
    finished = {f"{p.parent.name}/{p.name}" for p in dest.glob("*/*.jpg")}
    assert 4 <= len(finished) < 10
    assert leftovers(dest) == [] and not (dest / STAGING).exists()  # no temporaries, nothing half-written
    for name in finished:  # every file under its final name is complete and verified
        row = rows[(rows["class"] + "/" + rows["file"]) == name].iloc[0]
        assert sha256(dest / name) == row["sha256"]

    server.requests.clear()
    report = download_data(dest, manifest=rows, mirror=server.url, progress=False)
    assert report.ok
    assert set(report.already_present) == finished
    assert set(report.downloaded) == set(paths(rows)) - finished
    assert server.requests == Counter({p: 1 for p in paths(rows) if p not in finished})
    assert_complete(dest, rows)


def test_corrupted_file_is_rejected_by_its_hash(tmp_path, subset, server, capsys):
    rows, _, tsv = subset
    bad = paths(rows)[3]
    server.corrupt.add(bad)
    dest = tmp_path / "data"
    code = cli.main(["download-data", "--dest", str(dest), "--mirror", server.url, "--manifest", str(tsv),
                     "--retries", "1", "--quiet"])
    out = capsys.readouterr().out
    assert code == 1
    assert "sha256 mismatch" in out and bad.split("/")[1] in out and "run the same command again" in out
    assert not (dest / bad).exists()  # rejected: nothing under the final name
    assert leftovers(dest) == []
    assert server.requests[bad] == 2  # first try + 1 retry
    others = rows.drop(index=3)
    assert_complete(dest, others)

    # The mirror is fixed: the next run fetches only the missing file.
    server.corrupt.clear()
    server.requests.clear()
    report = download_data(dest, manifest=rows, mirror=server.url, progress=False)
    assert report.downloaded == [bad] and server.requests == Counter({bad: 1})
    assert_complete(dest, rows)


def test_transient_failures_are_retried(tmp_path, subset, server):
    rows, _, _ = subset
    busy, cut = paths(rows)[2], paths(rows)[7]
    server.fail[busy] = 2  # two 503s, then the file
    server.cut[cut] = 1  # one connection cut halfway through the body
    dest = tmp_path / "data"
    report = download_data(dest, manifest=rows, mirror=server.url, backoff=0.01, progress=False)
    assert report.ok, report.summary()
    assert server.requests[busy] == 3 and server.requests[cut] == 2
    assert_complete(dest, rows)


def test_missing_file_on_the_server_is_not_retried(tmp_path, subset, server):
    rows, mirror, _ = subset
    gone = paths(rows)[5]
    (mirror / gone).unlink()
    report = download_data(tmp_path / "data", manifest=rows, mirror=server.url, backoff=0.01, progress=False)
    assert list(report.failed) == [gone] and "HTTP 404" in report.failed[gone]
    assert server.requests[gone] == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens here once the socket is closed


def test_unreachable_server_fails_with_a_clear_error_not_a_hang(tmp_path, subset):
    _, _, tsv = subset
    dest = tmp_path / "data"
    # A subprocess with a generous bound: a hang fails the test instead of blocking the suite.
    result = subprocess.run(
        [sys.executable, "-m", "tlcourse", "download-data", "--dest", str(dest), "--manifest", str(tsv),
         "--mirror", f"http://127.0.0.1:{_closed_port()}", "--quiet"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "cannot be reached" in result.stderr and "127.0.0.1" in result.stderr
    assert "--mirror" in result.stderr  # the way out
    assert "Traceback" not in result.stderr
    assert list(dest.rglob("*.jpg")) == []


def test_server_that_never_answers_times_out(tmp_path, subset):
    rows, _, _ = subset
    with socket.socket() as silent:  # accepts connections (kernel backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(DownloadError, match="does not answer"):
            download_data(tmp_path / "data", manifest=rows, mirror=url, timeout=0.5, retries=1,
                          backoff=0.01, progress=False)


# --------------------------------------------------------------------------- both sets: photos and field test
def test_both_sets_by_default_over_http(tmp_path, small_sets, server, capsys):
    photos, field = small_sets
    dest, field_dest = tmp_path / "data", tmp_path / "field-test"
    code = cli.main(["download-data", "--dest", str(dest), "--field-test-dest", str(field_dest),
                     "--mirror", server.url, "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out
    assert_complete(dest, photos)
    assert_complete(field_dest, field)
    assert sorted(p.name for p in dest.iterdir()) == ["dog", "hotdog"]  # nothing of the field test among the photos
    assert server.requests == Counter({p: 1 for p in paths(photos) + ["field-test/" + p for p in paths(field)]})
    assert "10 downloaded" in out.out and "6 downloaded" in out.out and "field test" in out.err


def test_field_test_goes_where_the_setting_points(tmp_path, small_sets, subset, monkeypatch):
    """No --field-test-dest: TLCOURSE_FIELD_TEST decides (the folder the lessons read); a folder mirror serves it."""
    _, field = small_sets
    monkeypatch.setenv("TLCOURSE_FIELD_TEST", str(tmp_path / "my field test"))
    code = cli.main(["download-data", "--dest", str(tmp_path / "data"), "--only", "field-test",
                     "--mirror", str(subset[1]), "--quiet"])
    assert code == 0
    assert_complete(tmp_path / "my field test", field)
    assert not (tmp_path / "data").exists()


def test_only_photos(tmp_path, small_sets, server):
    photos, _ = small_sets
    dest, field_dest = tmp_path / "data", tmp_path / "field-test"
    code = cli.main(["download-data", "--dest", str(dest), "--field-test-dest", str(field_dest), "--only", "photos",
                     "--mirror", server.url, "--quiet"])
    assert code == 0
    assert_complete(dest, photos)
    assert not field_dest.exists() and not any(p.startswith("field-test/") for p in server.requests)


@pytest.mark.parametrize("over", ["http", "folder"])
def test_tampered_field_test_file_is_rejected(tmp_path, small_sets, subset, server, over, capsys):
    photos, field = small_sets
    bad = "field-test/" + paths(field)[4]
    if over == "http":
        server.corrupt.add(bad)
        mirror = server.url
    else:  # a USB stick whose copy was damaged: one byte changed, same length
        data = bytearray((subset[1] / bad).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (subset[1] / bad).write_bytes(bytes(data))
        mirror = str(subset[1])
    dest, field_dest = tmp_path / "data", tmp_path / "field-test"
    code = cli.main(["download-data", "--dest", str(dest), "--field-test-dest", str(field_dest), "--mirror", mirror,
                     "--retries", "0", "--quiet"])
    out = capsys.readouterr().out
    assert code == 1
    assert "sha256 mismatch" in out and bad.split("/")[-1] in out
    assert not (field_dest / paths(field)[4]).exists()  # rejected: nothing under its final name
    assert leftovers(field_dest) == []
    assert_complete(dest, photos)
    assert_complete(field_dest, field.drop(index=4))


@pytest.mark.parametrize("inside", [".", "field-test", "dog/field-test"])
def test_field_test_inside_the_photo_folder_is_refused(tmp_path, small_sets, subset, inside, capsys):
    dest = tmp_path / "data"
    code = cli.main(["download-data", "--dest", str(dest), "--field-test-dest", str(dest / inside),
                     "--mirror", str(subset[1]), "--quiet"])
    assert code == 1 and "overlap" in capsys.readouterr().err
    assert not dest.exists()  # refused before anything is fetched


def test_folder_mirror_without_the_field_test(tmp_path, small_sets, subset, capsys):
    shutil.rmtree(subset[1] / "field-test")
    code = cli.main(["download-data", "--dest", str(tmp_path / "data"), "--field-test-dest",
                     str(tmp_path / "field-test"), "--mirror", str(subset[1]), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "Mirror folder not found" in err and "field-test" in err
    assert not (tmp_path / "data").exists()  # found out before anything is fetched


def test_http_mirror_without_the_field_test_says_so(tmp_path, small_sets, subset, server, capsys):
    photos, _ = small_sets
    shutil.rmtree(subset[1] / "field-test")
    code = cli.main(["download-data", "--dest", str(tmp_path / "data"), "--field-test-dest",
                     str(tmp_path / "field-test"), "--mirror", server.url, "--quiet"])
    out = capsys.readouterr().out
    assert code == 1 and "HTTP 404" in out and "<mirror>/field-test/<class>/<file>" in out
    assert "run the same command again" not in out  # it would not help
    assert_complete(tmp_path / "data", photos)


def test_download_sets_rejects_an_unknown_set(tmp_path):
    with pytest.raises(ValueError, match="unknown set"):
        download_sets(tmp_path / "data", tmp_path / "field-test", ["photos", "fieldtest"])


# --------------------------------------------------------------------------- local folder mirror
def test_local_folder_mirror(tmp_path, subset):
    rows, mirror, _ = subset
    missing = paths(rows)[0]
    (mirror / missing).unlink()
    dest = tmp_path / "data"
    report = download_data(dest, manifest=rows, mirror=mirror, progress=False)
    assert list(report.failed) == [missing] and "not in the mirror folder" in report.failed[missing]
    assert_complete(dest, rows.iloc[1:])


def test_missing_mirror_folder(tmp_path, subset, capsys):
    code = cli.main(["download-data", "--dest", str(tmp_path / "d"), "--mirror", str(tmp_path / "nope"),
                     "--manifest", str(subset[2])])
    assert code == 1 and "Mirror folder not found" in capsys.readouterr().err


def test_a_different_file_under_a_photo_name_is_never_overwritten(tmp_path, subset, capsys):
    rows, mirror, tsv = subset
    dest = tmp_path / "data"
    mine = dest / paths(rows)[1]
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the learner's own file")
    code = cli.main(["download-data", "--dest", str(dest), "--mirror", str(mirror), "--manifest", str(tsv),
                     "--quiet"])
    out = capsys.readouterr().out
    assert code == 1 and "differs from the example set" in out and "move or delete" in out
    assert mine.read_bytes() == b"the learner's own file"
    assert_complete(dest, rows.drop(index=1))


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path, subset):
    rows, mirror, _ = subset
    dest = tmp_path / "data"
    stale = dest / STAGING / "dog" / "tmpdeadbeef"  # where pooch writes before the hash is checked
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a photo")
    download_data(dest, manifest=rows, mirror=mirror, progress=False)
    assert not stale.exists()
    assert_complete(dest, rows)


# --------------------------------------------------------------------------- pretrained weights
@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home / "hub" / "checkpoints"


def test_hash_prefix_follows_torch_hub():
    assert hash_prefix(MOBILENET) == "7ebf99e0"
    assert torch.hub.HASH_REGEX.search(MOBILENET).group(1) == hash_prefix(MOBILENET)


def test_prefetch_from_a_folder_installs_and_verifies(tmp_path, real_weights, empty_torch_home, capsys):
    usb = tmp_path / "usb"
    usb.mkdir()
    shutil.copyfile(real_weights, usb / MOBILENET)
    code = cli.main(["prefetch-weights", "mobilenet_v2", "--from", str(usb)])
    out = capsys.readouterr().out
    assert code == 0, out
    installed = empty_torch_home / MOBILENET
    assert installed.read_bytes() == (usb / MOBILENET).read_bytes()
    assert [p.name for p in empty_torch_home.iterdir()] == [MOBILENET]  # no temporaries left
    # torchvision then loads it from the cache, with no download.
    state = torch.load(installed, weights_only=True)
    assert set(state) == set(__import__("torchvision").models.mobilenet_v2().state_dict())
    # Honest about the hash: warn exactly when the file is not torchvision's published one.
    mismatch = not sha256(installed).startswith("7ebf99e0")
    assert ("warning" in out and "not the file torchvision publishes" in out) == mismatch
    # A second run sees it cached.
    assert cli.main(["prefetch-weights", "--from", str(usb)]) == 0


def test_prefetch_finds_a_copied_torch_home(tmp_path, real_weights, empty_torch_home):
    other = tmp_path / "other_home" / "hub" / "checkpoints"
    other.mkdir(parents=True)
    shutil.copyfile(real_weights, other / MOBILENET)
    [result] = prefetch_weights(["mobilenet_v2"], source_dir=tmp_path / "other_home", progress=False)
    assert result.action == "installed" and (empty_torch_home / MOBILENET).is_file()


@pytest.mark.parametrize("content", ["garbage", "wrong_model"])
def test_prefetch_rejects_files_that_are_not_the_weights(tmp_path, empty_torch_home, capsys, content):
    usb = tmp_path / "usb"
    usb.mkdir()
    if content == "garbage":
        (usb / MOBILENET).write_bytes(os.urandom(1000))
    else:
        torch.save({"conv.weight": torch.zeros(3, 3)}, usb / MOBILENET)
    code = cli.main(["prefetch-weights", "mobilenet_v2", "--from", str(usb)])
    err = capsys.readouterr().err
    assert code == 1 and "Nothing was installed" in err
    assert ("does not fit torchvision's mobilenet_v2" in err) == (content == "wrong_model")
    assert not (empty_torch_home / MOBILENET).exists()


def test_prefetch_from_a_folder_without_the_file(tmp_path, empty_torch_home, capsys):
    (tmp_path / "usb").mkdir()
    assert cli.main(["prefetch-weights", "resnet18", "--from", str(tmp_path / "usb")]) == 1
    err = capsys.readouterr().err
    assert "resnet18-f37072fd.pth" in err and "not in" in err


def test_prefetch_offline_without_cache(empty_torch_home, monkeypatch, capsys):
    monkeypatch.setenv("TLCOURSE_OFFLINE", "1")
    assert cli.main(["prefetch-weights", "resnet18"]) == 1
    assert "TLCOURSE_OFFLINE" in capsys.readouterr().err


def test_prefetch_already_cached(real_weights, capsys):
    assert cli.main(["prefetch-weights"]) == 0  # conftest's TORCH_HOME links the real file
    assert "mobilenet_v2: already cached, verified" in capsys.readouterr().out


def test_weights_download_checks_the_hash_in_the_name(tmp_path, real_weights):
    """torch.hub's downloader against a loopback server: the name's hash prefix decides."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copyfile(real_weights, served / MOBILENET)
    srv = MirrorServer(served)
    try:
        digest = sha256(real_weights)
        good = tmp_path / "cache" / f"mobilenet_v2-{digest[:8]}.pth"
        download_weights_file(f"{srv.url}/{MOBILENET}", good, progress=False)
        assert good.read_bytes() == real_weights.read_bytes()
        wrong = tmp_path / "cache" / "mobilenet_v2-00000000.pth"
        with pytest.raises(DownloadError, match="rejected"):
            download_weights_file(f"{srv.url}/{MOBILENET}", wrong, progress=False)
        assert not wrong.exists()
        assert sorted(p.name for p in good.parent.iterdir()) == [good.name]  # no partial file left
        with pytest.raises(DownloadError, match="Could not download"):
            download_weights_file(f"http://127.0.0.1:{_closed_port()}/{MOBILENET}", wrong, progress=False)
    finally:
        srv.close()
