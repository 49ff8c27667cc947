"""``tlcourse download-data``: the example photos and the field test, verified by sha256."""

from __future__ import annotations

import argparse
import sys

from ..config import get_config
from ..errors import TLCourseError
from .common import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, err

MIRROR_HELP = """Classroom mirror: a folder laid out as <mirror>/dog/<file> and <mirror>/hotdog/<file> for the
photos, and <mirror>/field-test/dog/<file> and <mirror>/field-test/hotdog/<file> for the field test.
Make one from a finished download and serve it on the local network with
    mkdir mirror && cp -r data/dog data/hotdog field-test mirror/
    cd mirror && python3 -m http.server 8000
and on each machine run
    tlcourse download-data --mirror http://TEACHER-IP:8000
or copy from a USB stick: tlcourse download-data --mirror /media/usb/mirror"""


SET_TITLES = {"photos": "the example photos", "field-test": "the field test (photos from elsewhere, evaluation only)"}


def cmd_download_data(args: argparse.Namespace) -> int:
    from ..download import check_sets, download_sets

    field_test_dest = args.field_test_dest or get_config().field_test_dir
    sets = ["photos"] if args.manifest else [args.only] if args.only else ["photos", "field-test"]
    check_sets(args.dest, field_test_dest, sets, args.mirror)  # refuses before fetching anything
    where = args.mirror or "the published addresses (raw.githubusercontent.com, pinned by commit)"
    ok = True
    for name in sets:
        folder = args.dest if name == "photos" else field_test_dest
        print(f"Downloading {SET_TITLES[name]} into {folder} from {where}", file=sys.stderr)
        try:
            [report] = download_sets(args.dest, field_test_dest, [name], mirror=args.mirror,
                                     manifests={"photos": args.manifest} if args.manifest else None,
                                     workers=args.workers, retries=args.retries, timeout=args.timeout,
                                     progress=not args.quiet).values()
        except OSError as error:  # the destination cannot be created or written (permissions, full disk)
            if isinstance(error, TLCourseError):
                raise
            err(f"cannot write the photos into {folder}: {error}")
            return EXIT_FAIL
        except KeyboardInterrupt:
            err(f"interrupted. Files completed so far are verified and kept in {folder}; "
                 "run the same command again to resume.")
            return EXIT_INTERRUPTED
        print(report.summary())
        ok = ok and report.ok
    return EXIT_OK if ok else EXIT_FAIL
