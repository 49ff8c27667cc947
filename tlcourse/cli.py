"""The ``tlcourse`` command (also ``python -m tlcourse``): set up a machine for the course and run the
reference solution from a terminal. Heavy imports (torch) happen inside the commands that need them,
so ``--help`` and ``download-data`` start quickly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Sequence

from . import __version__
from .config import get_config
from .errors import TLCourseError

EXIT_OK, EXIT_FAIL, EXIT_INTERRUPTED = 0, 1, 130
MIRROR_HELP = """Classroom mirror: a folder laid out as <mirror>/dog/<file> and <mirror>/hotdog/<file> for the
photos, and <mirror>/field-test/dog/<file> and <mirror>/field-test/hotdog/<file> for the field test.
Make one from a finished download and serve it on the local network with
    mkdir mirror && cp -r data/dog data/hotdog field-test mirror/
    cd mirror && python3 -m http.server 8000
and on each machine run
    tlcourse download-data --mirror http://TEACHER-IP:8000
or copy from a USB stick: tlcourse download-data --mirror /media/usb/mirror"""


def _err(message: str) -> None:
    print(f"tlcourse: error: {message}", file=sys.stderr)


def _device(preference: str | None):
    from .training import choose_device  # torch loads only for the commands that need it

    return choose_device(preference or get_config().device)


def _report_skipped(skipped) -> None:
    """Name each file a folder scan left out that looks meant as a photo, with the reason."""
    from .data import worth_warning

    for item in worth_warning(skipped):
        print(f"skipped {item.path}: {item.reason}", file=sys.stderr)


# --------------------------------------------------------------------------- download-data
SET_TITLES = {"photos": "the example photos", "field-test": "the field test (photos from elsewhere, evaluation only)"}


def cmd_download_data(args: argparse.Namespace) -> int:
    from .download import check_sets, download_sets

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
            _err(f"cannot write the photos into {folder}: {error}")
            return EXIT_FAIL
        except KeyboardInterrupt:
            _err(f"interrupted. Files completed so far are verified and kept in {folder}; "
                 "run the same command again to resume.")
            return EXIT_INTERRUPTED
        print(report.summary())
        ok = ok and report.ok
    return EXIT_OK if ok else EXIT_FAIL


# --------------------------------------------------------------------------- prefetch-weights
def cmd_prefetch_weights(args: argparse.Namespace) -> int:
    import torch.hub

    from .weights import prefetch_weights

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


# --------------------------------------------------------------------------- doctor
def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import MISSING, format_table, run_checks

    checks = run_checks(get_config(), data_dir=args.data, verify_images=not args.quick)
    print(format_table(checks))
    return EXIT_FAIL if any(c.status == MISSING for c in checks) else EXIT_OK


# --------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from .dashboard import TextProgress
    from .data import find_classes, load_course_data
    from .models import build_model
    from .recipes import EPOCHS, VIEWS, train_reference
    from .training import seed_everything

    config = get_config()
    backbone = args.backbone or config.backbone
    seed = config.seed if args.seed is None else args.seed
    epochs = args.epochs if args.epochs is not None else (EPOCHS if args.method == "freeze" else 2)
    views = VIEWS if args.views is None else args.views
    out = Path(args.out) if args.out else config.output_dir / f"{backbone}-{args.method}.pt"
    device = _device(args.device)

    seed_everything(seed)
    # Build the model first: its weights define the input transform (sizes, normalisation).
    model = build_model(len(find_classes(args.data_dir)), backbone=backbone, offline=config.offline).to(device)
    skipped: list = []  # every photo is decoded up front: a truncated file is skipped and named now
    data = load_course_data(args.data_dir, model.transform_settings, seed=seed, per_class=args.per_class,
                            skipped=skipped, exclusions=config.excluded_csv)
    _report_skipped(skipped)
    sizes = data.split.sizes()
    print(f"Training {backbone} ({'weight freezing' if args.method == 'freeze' else 'discriminative learning rates'}) "
          f"on {device}: {len(data.table)} photos of {', '.join(data.classes)}; split train {sizes['train']}, "
          f"val {sizes['val']}, test {sizes['test']} (seed {seed}); {epochs} epoch(s)", file=sys.stderr)
    started = time.perf_counter()
    # Progress (ours and the recipes' own messages) goes to stderr; stdout keeps only the results.
    with contextlib.redirect_stdout(sys.stderr):
        result = train_reference(model, data, out, args.method, epochs, args.lr, views, args.batch_size, seed,
                                 config.feature_cache, [TextProgress(file=sys.stderr)], device=device, extra={
                                     "epochs": epochs, "data_dir": str(Path(args.data_dir).resolve()),
                                     "per_class": args.per_class})
    if result.history.interrupted:
        print("Training was interrupted; the checkpoint holds the best weights so far.", file=sys.stderr)
    calibration = result.calibration
    print(f"trained in {time.perf_counter() - started:.1f} s")
    print(f"validation accuracy: {result.val_accuracy:.4f} ({result.n_val} photos)")
    print(f"test accuracy: {result.test_accuracy:.4f} ({result.n_test} photos)")
    print(f"calibration (validation): temperature {calibration.temperature:.3f}, expected calibration error "
          f"{calibration.ece_before:.4f} -> {calibration.ece_after:.4f}; predict answers 'unsure' below "
          f"{calibration.threshold:.3f}")
    print(f"checkpoint: {out}")
    return EXIT_OK


# --------------------------------------------------------------------------- evaluate
def _checkpoint_on_folder(args: argparse.Namespace):
    """``(device, model, info, table)``: the checkpoint's model and ``args.data_dir`` labelled with its
    classes (skipped files are named)."""
    from .checkpoint import load_checkpoint
    from .data import label_folder

    device = _device(args.device)
    model, info = load_checkpoint(args.checkpoint, device)
    skipped: list = []
    table = label_folder(Path(args.data_dir), info["class_names"], skipped)
    _report_skipped(skipped)
    return device, model, info, table


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data import CSVDataset, eval_transform, make_loader
    from .evaluation import confusion_frame, predict
    from .fieldtest import field_report
    from .inference import for_predictions

    device, model, info, table = _checkpoint_on_folder(args)
    names = info["class_names"]
    loader = make_loader(CSVDataset(table, eval_transform(info["transform"])), batch_size=args.batch_size)
    print(f"Evaluating {args.checkpoint} on {len(table)} photos in {args.data_dir} ({device})", file=sys.stderr)
    frame = predict(for_predictions(model), loader, device)  # the fast forward of the feature cache
    confusion = confusion_frame(frame["label"], frame["pred"], names)
    report = field_report(frame, list(table["file_path"]), names)  # scores with intervals, and the mistakes
    if args.json:
        print(json.dumps({
            "checkpoint": str(args.checkpoint), "data_dir": str(args.data_dir), "n": report.n,
            "correct": report.correct, "accuracy": report.accuracy, "class_names": list(names),
            "counts": {name: int(row.n) for name, row in report.recall.iterrows()},
            # null for a class with no photos in the folder (JSON has no NaN)
            "per_class": {name: (None if math.isnan(row.recall) else row.recall)
                          for name, row in report.recall.iterrows()},
            "confusion_matrix": confusion.to_numpy().tolist(),
            "confusion_matrix_axes": "rows: true class, columns: predicted class, in class_names order",
            **report.to_dict(),
        }))
        return EXIT_OK
    print(f"accuracy: {report.accuracy:.4f} ({report.correct} of {report.n} correct), 95 % interval (Wilson) "
          f"{report.interval[0]:.4f} to {report.interval[1]:.4f}; balanced accuracy {report.balanced_accuracy:.4f}")
    print("per-class accuracy:")
    for name, row in report.recall.iterrows():
        shown = "no photos" if row.n == 0 else f"{row.recall:.4f}, 95 % interval {row.low:.4f} to {row.high:.4f}"
        print(f"  {name}: {shown} ({int(row.n)} photos)")
    print("confusion matrix (rows: true, columns: predicted):")
    print(confusion.to_string())
    if len(report.mistakes):
        print(f"mistakes ({len(report.mistakes)}, most confident first):")
        print(report.mistakes.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return EXIT_OK


# --------------------------------------------------------------------------- robustness
def cmd_robustness(args: argparse.Namespace) -> int:
    from .robustness import robustness_report

    device, model, info, table = _checkpoint_on_folder(args)
    names = info["class_names"]
    print(f"Robustness of {args.checkpoint} on {len(table)} photos in {args.data_dir} ({device}); "
          "each change is made in memory, the folder is only read", file=sys.stderr)
    report = robustness_report(model, table, names, batch_size=args.batch_size, device=device,
                               progress=lambda name: print(f"  {name}...", file=sys.stderr, flush=True))
    if args.json:
        rows = report.reset_index().to_dict(orient="records")
        print(json.dumps({"checkpoint": str(args.checkpoint), "data_dir": str(args.data_dir), "n": len(table),
                          "class_names": list(names), "interval_method": "95 % Wilson score interval",
                          "changes": [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                                       for k, v in row.items()} for row in rows]}))
        return EXIT_OK
    shown = report.drop(columns=["kind"])
    print(shown.to_string(float_format=lambda v: f"{v:.3f}"))
    return EXIT_OK


# --------------------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace) -> int:
    from .calibration import Calibration, predict_photo
    from .checkpoint import load_checkpoint
    from .data import load_image
    from .errors import ImageLoadError

    model, info = load_checkpoint(args.checkpoint, _device(args.device))
    # Calibrated probabilities and the "unsure" threshold, both fitted on validation by `tlcourse train`;
    # an older checkpoint without them gives the plain softmax and never says unsure.
    calibration = Calibration.from_extra(info["extra"])
    results, failures = [], 0
    for image in args.images:
        try:
            answer, _ = predict_photo(model, load_image(image), info["class_names"], info["transform"], calibration,
                                      args.threshold)
        except ImageLoadError as error:  # missing, not an image, truncated: say so and go on with the others
            _err(str(error))
            failures += 1
            continue
        results.append({"image": str(image), "class": answer.answer, "best_guess": answer.best_guess,
                        "probability": answer.probability, "unsure": answer.unsure, "threshold": answer.threshold,
                        "temperature": answer.temperature, "probabilities": answer.probabilities})
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            guess = f"\tbest guess {r['best_guess']}" if r["unsure"] else ""  # a 4th column only when unsure
            print(f"{r['image']}\t{r['class']}\t{r['probability']:.4f}{guess}")
    return EXIT_FAIL if failures else EXIT_OK


# --------------------------------------------------------------------------- parser
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
        "new head, by weight freezing (only the head learns) or discriminative learning rates (the head is trained "
        "on the frozen backbone first, then everything learns, the backbone 10x more slowly). The head trains on "
        "cached features of each photo and of a few augmented views of it (random crop, flip, colours, a "
        "downscale), computed once and reused by every rerun. Every photo is "
        "decoded first; unreadable ones are skipped and named. Splits the photos 80/10/10 from the seed, prints "
        "progress, the final validation and test accuracy, and writes a checkpoint for `tlcourse evaluate` and "
        "`tlcourse predict`.", options=["device"])
    p.add_argument("data_dir", metavar="DATA_DIR", help="folder of class subfolders with photos")
    p.add_argument("--backbone", help="torchvision backbone (default: TLCOURSE_BACKBONE, mobilenet_v2)")
    p.add_argument("--method", choices=["freeze", "discriminative"], default="freeze",
                   help="fine-tuning method (default: freeze)")
    p.add_argument("--epochs", type=int, help="epochs (default: tlcourse.recipes.EPOCHS for freeze; 2 for discriminative, after 5 head-only epochs)")
    p.add_argument("--views", type=int, metavar="K",
                   help="augmented views cached per training photo for the head (default: tlcourse.recipes.VIEWS; 0: none)")
    p.add_argument("--out", metavar="FILE", help="checkpoint to write (default: TLCOURSE_OUTPUT/<backbone>-<method>.pt)")
    p.add_argument("--lr", type=float,
                   help="learning rate of the head (default: 1e-3 for freeze, 1e-4 when fine-tuning; backbone 1e-5)")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tlcourse`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except TLCourseError as error:
        # Expected errors name the fix; a traceback would hide it. Anything else is a bug and keeps its traceback.
        _err(" ".join(str(error).split()))
        return EXIT_FAIL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
