"""``tlcourse prefetch-weights`` and ``tlcourse doctor``: a machine ready for the lessons."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import get_config
from .common import EXIT_FAIL, EXIT_OK

def cmd_prefetch_weights(args: argparse.Namespace) -> int:
    import torch.hub

    from ..weights import prefetch_weights

    config = get_config()
    print(f"Torch cache: {Path(torch.hub.get_dir()) / 'checkpoints'}", file=sys.stderr)
    results = prefetch_weights(args.backbones or [config.backbone], source_dir=args.source, timeout=args.timeout,
                               progress=not args.quiet, offline=config.offline)
    for result in results:
        print(f"{result.backbone}: {result.action}, verified (loads into {result.backbone}), "
              f"sha256 {result.sha256[:16]}... -> {result.path}")
        if result.warning:
            print(f"  warning: {result.warning}")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..doctor import MISSING, format_table, run_checks

    checks = run_checks(get_config(), data_dir=args.data, verify_images=not args.quick)
    print(format_table(checks))
    return EXIT_FAIL if any(c.status == MISSING for c in checks) else EXIT_OK
