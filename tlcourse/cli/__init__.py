"""The ``tlcourse`` command (also ``python -m tlcourse``): set up a machine for the course and run the
reference solution from a terminal. Each command lives in the module of its group (``photos``, ``machine``,
``model``); heavy imports (torch) happen inside the commands that need them, so ``--help`` and
``download-data`` start quickly."""

from __future__ import annotations

import argparse
from typing import Sequence

from .. import __version__
from ..config import DEFAULT_METHOD, METHODS
from ..errors import TLCourseError
from . import grade as grading
from .common import EXIT_FAIL, EXIT_INTERRUPTED, err
from .machine import cmd_doctor, cmd_prefetch_weights
from .model import cmd_evaluate, cmd_predict, cmd_robustness, cmd_train
from .photos import MIRROR_HELP, cmd_download_data


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for all commands (also used to test every ``--help``)."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="tlcourse", formatter_class=formatter,
        description="Transfer-learning course: set up a machine (data, weights, checks) and run the "
                    "reference solution from a terminal.",
        epilog="Typical setup: tlcourse download-data && tlcourse prefetch-weights && tlcourse doctor\n"
               "Run `tlcourse COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"tlcourse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func, summary: str, description: str, epilog: str | None = None,
                options: Sequence[str] = ()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=description, epilog=epilog, formatter_class=formatter)
        p.set_defaults(func=func)
        if "quiet" in options:
            p.add_argument("--quiet", action="store_true", help="no progress bar")
        if "json" in options:
            p.add_argument("--json", action="store_true", help="print JSON instead of text")
        if "device" in options:
            p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="default: TLCOURSE_DEVICE, auto")
        if "checkpoint-on-folder" in options:
            p.add_argument("checkpoint", metavar="CHECKPOINT", help="file written by `tlcourse train` or save_checkpoint")
            p.add_argument("data_dir", metavar="DATA_DIR", help="folder of class subfolders with photos (only read)")
            p.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
        return p

    p = command(
        "download-data", cmd_download_data, "download the example photos and the field test, verified by sha256",
        "Download the course's example set (1,434 dog and hotdog photos) into DEST/dog and DEST/hotdog, and its "
        "field test (100 photos from other sources, for evaluation only) into a folder of its own, by default "
        "TLCOURSE_FIELD_TEST (field-test/ in the course folder). Each photo is fetched from where it is published "
        "(a GitHub repository pinned to a commit) or from a classroom mirror, and checked against the sha256 in "
        "the manifest shipped with tlcourse. Downloads run in parallel; "
        "transient failures are retried; an interrupted run resumes without fetching verified files again; a file "
        "with the wrong hash is rejected and never left under its final name.",
        MIRROR_HELP, options=["quiet"])
    p.add_argument("--dest", default="data", help="folder for the example photos (default: data)")
    p.add_argument("--field-test-dest", metavar="DIR",
                   help="folder for the field test, never inside DEST (default: TLCOURSE_FIELD_TEST, field-test/)")
    p.add_argument("--only", choices=["photos", "field-test"], help="fetch one set only (default: both)")
    p.add_argument("--mirror", metavar="URL_OR_DIR",
                   help="take the files from an http(s) address or a local folder laid out as <mirror>/<class>/<file>, "
                        "with the field test in <mirror>/field-test/<class>/<file>")
    p.add_argument("--manifest", metavar="TSV",
                   help="fetch another set instead, listed in the same tab-separated format, into DEST")
    p.add_argument("--workers", type=int, default=8, help="parallel downloads (default: 8)")
    p.add_argument("--retries", type=int, default=3, help="retries per file for transient failures (default: 3)")
    p.add_argument("--timeout", type=float, default=15.0,
                   help="seconds to wait for a connection or for data before giving up on a try (default: 15)")

    p = command(
        "prefetch-weights", cmd_prefetch_weights, "put pretrained weights into the torch cache (TORCH_HOME) for offline use",
        "Download the ImageNet weights of each BACKBONE into the torch cache ($TORCH_HOME/hub/checkpoints, default "
        "~/.cache/torch/hub/checkpoints), checked with torchvision's hash, so the lessons then work offline. With "
        "--from DIR, install them from a folder instead (a USB stick, or another machine's TORCH_HOME). Every file "
        "is verified by loading it into the model.",
        "Examples:\n"
        "    tlcourse prefetch-weights                      # the configured backbone (TLCOURSE_BACKBONE)\n"
        "    tlcourse prefetch-weights mobilenet_v2 resnet18 vgg11\n"
        "    tlcourse prefetch-weights --from /media/usb/weights", options=["quiet"])
    p.add_argument("backbones", nargs="*", metavar="BACKBONE",
                   help="torchvision model names (default: TLCOURSE_BACKBONE, mobilenet_v2)")
    p.add_argument("--from", dest="source", metavar="DIR",
                   help="install from this folder (file names as torchvision's, e.g. mobilenet_v2-7ebf99e0.pth)")
    p.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds (default: 30)")

    p = command(
        "doctor", cmd_doctor, "check that this machine is ready for the lessons",
        "Print one table: Python, torch, torchvision, JupyterLab and ipywidgets versions, the widget front end, the "
        "device (CUDA, MPS or CPU), the data folder (classes, counts, unreadable files) and which backbones have "
        "cached weights. Exits with status 1 when something a lesson needs is missing, and prints the fix for each "
        "problem.")
    p.add_argument("--data", metavar="DIR", help="photo folder to check (default: TLCOURSE_DATA, data)")
    p.add_argument("--quick", action="store_true", help="do not open every image to look for unreadable files")

    p = command(
        "train", cmd_train, "train the reference solution and save a checkpoint",
        "Train the course's reference solution on DATA_DIR (one subfolder per class): a pretrained backbone with a "
        "new head, by weight freezing (only the head learns), by training the top blocks from a cut and the head "
        "(the layers below the cut frozen), or by discriminative learning rates (the head is trained on the frozen "
        "backbone first, then everything learns, the backbone 10x more slowly). What learns on a frozen part trains "
        "on its cached output for each photo and for a few augmented views of it (random crop, flip, colours, a "
        "downscale), computed once and reused by every rerun. Every photo is "
        "decoded first; unreadable ones are skipped and named. Splits the photos 80/10/10 from the seed, prints "
        "progress, the final validation and test accuracy, and writes a checkpoint for `tlcourse evaluate` and "
        "`tlcourse predict`.", options=["device"])
    p.add_argument("data_dir", metavar="DATA_DIR", help="folder of class subfolders with photos")
    p.add_argument("--backbone", help="torchvision backbone (default: TLCOURSE_BACKBONE, mobilenet_v2)")
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help=f"fine-tuning method (default: {DEFAULT_METHOD}, chosen on validation: see the README)")
    p.add_argument("--cut", metavar="BLOCK", help="with --method cut: the first block that learns, a module path "
                   "such as features.14 (default: tlcourse.cut.DEFAULT_CUTS for the backbone)")
    p.add_argument("--epochs", type=int, help="epochs (default: tlcourse.recipes.EPOCHS for freeze, CUT_EPOCHS for cut; "
                   "2 for discriminative, after 5 head-only epochs)")
    p.add_argument("--views", type=int, metavar="K",
                   help="augmented views cached per training photo for the head (default: tlcourse.recipes.VIEWS; 0: none)")
    p.add_argument("--out", metavar="FILE", help="checkpoint to write (default: TLCOURSE_OUTPUT/<backbone>-<method>.pt)")
    p.add_argument("--lr", type=float,
                   help="learning rate of the head (default: 1e-3 for freeze and cut, the blocks 10x lower; 1e-4 for "
                   "discriminative, the backbone 1e-5)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("--per-class", type=int, metavar="N", help="use at most N photos per class (quick runs)")
    p.add_argument("--seed", type=int, help="seed for the split and training (default: TLCOURSE_SEED, 0)")

    command(
        "evaluate", cmd_evaluate, "accuracy, per-class accuracy and confusion matrix of a checkpoint on a folder",
        "Evaluate a checkpoint on every photo in DATA_DIR (subfolders named like some or all of its classes): "
        "accuracy, per-class accuracy, confusion matrix, recall per class and accuracy with 95 % (Wilson) intervals, "
        "balanced accuracy and the mistakes (--json: all of it as one JSON object). On photos from another source "
        "than the training photos (a field test) it shows how the model does in the real world.",
        options=["json", "device", "checkpoint-on-folder"])

    command(
        "robustness", cmd_robustness, "accuracy of a checkpoint on a folder under controlled changes of its photos",
        "Evaluate a checkpoint on every photo in DATA_DIR as it is and after each change (long side 224/160/112 px, "
        "JPEG quality 30 and 10, blur, brightness, contrast, an off-centre crop, a horizontal flip), each followed by "
        "the model's evaluation transform: accuracy with its 95 % interval, balanced accuracy, recall per class and "
        "the drop (--json: as JSON). The changed photos are made in memory; nothing in DATA_DIR is written.",
        options=["json", "device", "checkpoint-on-folder"])

    p = command(
        "predict", cmd_predict, "class and probability for each image",
        "Print the predicted class and its probability for each IMAGE, one line each: IMAGE<TAB>CLASS<TAB>PROBABILITY "
        "(--json: a JSON list with every class's probability). Probabilities are calibrated with the temperature "
        "`tlcourse train` fitted on the validation photos; below the threshold it chose there, CLASS is 'unsure' "
        "and a fourth column names the best guess.", options=["json", "device"])
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="file written by `tlcourse train` or save_checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photo(s) to classify")
    p.add_argument("--threshold", type=float, metavar="P",
                   help="answer 'unsure' when the top probability is below P (default: the checkpoint's, chosen on "
                        "validation; 0: never)")

    p = sub.add_parser("grade", help=grading.SUMMARY, description=grading.DESCRIPTION, epilog=grading.EPILOG,
                       formatter_class=formatter)
    grading.add_arguments(p)
    p.set_defaults(func=grading.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tlcourse`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        err("interrupted")
        return EXIT_INTERRUPTED
    except TLCourseError as error:
        # Expected errors name the fix; a traceback would hide it. Anything else is a bug and keeps its traceback.
        err(" ".join(str(error).split()))
        return EXIT_FAIL
