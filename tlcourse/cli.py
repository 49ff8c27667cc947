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
MIRROR_HELP = """Classroom mirror: any folder laid out as <mirror>/dog/<file> and <mirror>/hotdog/<file>
(a finished data/ folder). Serve it on the local network with
    cd data && python -m http.server 8000
and on each machine run
    tlcourse download-data --mirror http://TEACHER-IP:8000
or copy from a USB stick: tlcourse download-data --mirror /media/usb/data"""


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
def cmd_download_data(args: argparse.Namespace) -> int:
    from .download import download_data

    where = args.mirror or "the published addresses (raw.githubusercontent.com, pinned by commit)"
    print(f"Downloading the example set into {args.dest} from {where}", file=sys.stderr)
    try:
        report = download_data(args.dest, manifest=args.manifest, mirror=args.mirror, workers=args.workers,
                               retries=args.retries, timeout=args.timeout, progress=not args.quiet)
    except OSError as error:  # the destination cannot be created or written (permissions, full disk)
        if isinstance(error, TLCourseError):
            raise
        _err(f"cannot write the photos into {args.dest}: {error}")
        return EXIT_FAIL
    except KeyboardInterrupt:
        _err(f"interrupted. Files completed so far are verified and kept in {args.dest}; "
             "run the same command again to resume.")
        return EXIT_INTERRUPTED
    print(report.summary())
    return EXIT_OK if report.ok else EXIT_FAIL


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
    from .calibration import calibrate, collect_logits
    from .checkpoint import save_checkpoint
    from .dashboard import TextProgress
    from .data import find_classes, load_course_data
    from .features import compute_features
    from .models import build_model
    from .recipes import EPOCHS, VIEWS, train_discriminative, train_frozen
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
    classes = find_classes(args.data_dir)
    model = build_model(len(classes), backbone=backbone, weights="DEFAULT", offline=config.offline).to(device)
    # Every photo decoded once up front: a truncated file is skipped and named now, not found mid-training.
    skipped: list = []
    data = load_course_data(args.data_dir, model.transform_settings, seed=seed, per_class=args.per_class,
                            check="decode", skipped=skipped, exclusions=config.excluded_csv)
    _report_skipped(skipped)
    sizes = data.split.sizes()
    print(f"Training {backbone} ({'weight freezing' if args.method == 'freeze' else 'discriminative learning rates'}) "
          f"on {device}: {len(data.table)} photos of {', '.join(data.classes)}; split train {sizes['train']}, "
          f"val {sizes['val']}, test {sizes['test']} (seed {seed}); {epochs} epoch(s)", file=sys.stderr)
    progress = TextProgress(file=sys.stderr)
    started = time.perf_counter()
    # Progress (ours and the recipes' own messages) goes to stderr; stdout keeps only the results.
    with contextlib.redirect_stdout(sys.stderr):
        if args.method == "freeze":
            # Cached features (the recipe's default): each photo goes through the backbone once.
            history = train_frozen(model, data, epochs=epochs, lr=args.lr or 1e-3, batch_size=args.batch_size,
                                   callbacks=[progress], seed=seed, cache_dir=config.feature_cache, views=views)
        else:
            # Head first, on the frozen backbone (fast, cached): fine-tuning from a random head would send
            # large random gradients into the pretrained layers. Then everything, the backbone 10x slower.
            train_frozen(model, data, epochs=5, batch_size=args.batch_size, callbacks=[progress], seed=seed,
                         cache_dir=config.feature_cache, views=views)
            history = train_discriminative(model, data, epochs=epochs, head_lr=args.lr or 1e-4,
                                           batch_size=args.batch_size, callbacks=[progress], seed=seed)
    seconds = time.perf_counter() - started
    if args.method == "freeze":
        # The backbone is frozen, so the head on the cached features gives the whole model's logits
        # without a second pass of the backbone over the validation photos (the test ones join the cache).
        sets = compute_features(model, data, ("val", "test"), cache_dir=config.feature_cache)
        net, loaders = model.head, {part: sets[part].loader(args.batch_size) for part in sets}
    else:
        net, loaders = model, {part: data.loader(part, args.batch_size) for part in ("val", "test")}
    # The validation logits give its accuracy and, fitted on them (never on the test photos), the
    # temperature and the "unsure" threshold that `predict` uses.
    val_logits, val_labels = collect_logits(net, loaders["val"], device)
    val = {"accuracy": float((val_logits.argmax(1) == val_labels).float().mean()), "n": len(val_labels)}
    calibration = calibrate(val_logits, val_labels)
    test_logits, test_labels = collect_logits(net, loaders["test"], device)
    test = {"accuracy": float((test_logits.argmax(1) == test_labels).float().mean()), "n": len(test_labels)}
    save_checkpoint(out, model, data.classes, history, extra={
        "method": args.method, "epochs": epochs, "views": views, "seed": seed, "data_dir": str(Path(args.data_dir).resolve()),
        "per_class": args.per_class, "val_accuracy": val["accuracy"], "test_accuracy": test["accuracy"],
        "calibration": calibration.to_dict(),
    })
    if history.interrupted:
        print("Training was interrupted; the checkpoint holds the best weights so far.", file=sys.stderr)
    print(f"trained in {seconds:.1f} s")
    print(f"validation accuracy: {val['accuracy']:.4f} ({val['n']} photos)")
    print(f"test accuracy: {test['accuracy']:.4f} ({test['n']} photos)")
    print(f"calibration (validation): temperature {calibration.temperature:.3f}, expected calibration error "
          f"{calibration.ece_before:.4f} -> {calibration.ece_after:.4f}; predict answers 'unsure' below "
          f"{calibration.threshold:.3f}")
    print(f"checkpoint: {out}")
    return EXIT_OK


# --------------------------------------------------------------------------- evaluate
def _folder_table(data_dir: Path, class_names: Sequence[str]):
    """``data_dir``'s photos labelled with the checkpoint's classes; skipped files are named."""
    from .data import label_folder

    skipped: list = []
    table = label_folder(data_dir, class_names, skipped)
    _report_skipped(skipped)
    return table


def _checkpoint_on_folder(args: argparse.Namespace):
    """``(device, model, info, table)``: the checkpoint's model and ``args.data_dir`` labelled with its classes."""
    from .checkpoint import load_checkpoint

    device = _device(args.device)
    model, info = load_checkpoint(args.checkpoint, device)
    return device, model, info, _folder_table(Path(args.data_dir), info["class_names"])


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data import CSVDataset, eval_transform, make_loader
    from .evaluation import accuracy, confusion_frame, per_class_accuracy, predict
    from .features import for_predictions
    from .fieldtest import field_report

    device, model, info, table = _checkpoint_on_folder(args)
    names = info["class_names"]
    loader = make_loader(CSVDataset(table, eval_transform(info["transform"])), batch_size=args.batch_size)
    print(f"Evaluating {args.checkpoint} on {len(table)} photos in {args.data_dir} ({device})", file=sys.stderr)
    frame = predict(for_predictions(model), loader, device)  # the fast forward of the feature cache
    acc = accuracy(frame["label"], frame["pred"])
    per_class = per_class_accuracy(frame["label"], frame["pred"], names)
    confusion = confusion_frame(frame["label"], frame["pred"], names)
    counts = table["class_name"].value_counts().to_dict()
    report = field_report(frame, list(table["file_path"]), names)  # intervals, balanced accuracy, mistakes
    if args.json:
        correct = int((frame["label"] == frame["pred"]).sum())
        print(json.dumps({
            "checkpoint": str(args.checkpoint), "data_dir": str(args.data_dir), "n": int(len(frame)),
            "correct": correct, "accuracy": acc, "class_names": list(names),
            "counts": {name: int(counts.get(name, 0)) for name in names},
            # null for a class with no photos in the folder (JSON has no NaN)
            "per_class": {k: (None if math.isnan(v) else v) for k, v in per_class.items()},
            "confusion_matrix": confusion.to_numpy().tolist(),
            "confusion_matrix_axes": "rows: true class, columns: predicted class, in class_names order",
            **report.to_dict(),
        }))
        return EXIT_OK
    print(f"accuracy: {acc:.4f} ({int((frame['label'] == frame['pred']).sum())} of {len(frame)} correct)")
    print("per-class accuracy:")
    for name, value in per_class.items():
        shown = "no photos" if math.isnan(value) else f"{value:.4f}"
        print(f"  {name}: {shown} ({counts.get(name, 0)} photos)")
    print("confusion matrix (rows: true, columns: predicted):")
    print(confusion.to_string())
    print(f"95 % intervals (Wilson):\n{report.summary()}")
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
    import torch

    from .calibration import Calibration, verdict
    from .checkpoint import load_checkpoint
    from .data import eval_transform, load_image
    from .errors import ImageLoadError

    device = _device(args.device)
    model, info = load_checkpoint(args.checkpoint, device)
    names = info["class_names"]
    transform = eval_transform(info["transform"])
    # Calibrated probabilities and the "unsure" threshold, both fitted on validation by `tlcourse train`;
    # an older checkpoint without them gives the plain softmax and never says unsure.
    calibration = Calibration.from_extra(info["extra"])
    results, failures = [], 0
    for image in args.images:
        try:
            x = transform(load_image(image)).unsqueeze(0)
        except ImageLoadError as error:  # missing, not an image, truncated: say so and go on with the others
            _err(str(error))
            failures += 1
            continue
        with torch.no_grad():
            answer = verdict(model(x.to(device))[0], names, calibration, args.threshold)
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
        "download-data", cmd_download_data, "download the example photos (dog/hotdog), verified by sha256",
        "Download the course's example set (1,434 dog and hotdog photos) into DEST/dog and DEST/hotdog. Each "
        "photo is fetched from where it is published (a GitHub repository pinned to a commit) or from a classroom "
        "mirror, and checked against the sha256 in the manifest shipped with tlcourse. Downloads run in parallel; "
        "transient failures are retried; an interrupted run resumes without fetching verified files again; a file "
        "with the wrong hash is rejected and never left under its final name.",
        MIRROR_HELP, options=["quiet"])
    p.add_argument("--dest", default="data", help="folder to fill (default: data)")
    p.add_argument("--mirror", metavar="URL_OR_DIR",
                   help="take the files from an http(s) address or a local folder laid out as <mirror>/<class>/<file>")
    p.add_argument("--manifest", metavar="TSV",
                   help="another manifest in the same tab-separated format (default: the course's example set)")
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

    from .grading import cli as grading  # its own module; no torch at import
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
        _err("interrupted")
        return EXIT_INTERRUPTED
    except TLCourseError as error:
        # Expected errors name the fix; a traceback would hide it. Anything else is a bug and keeps its traceback.
        _err(" ".join(str(error).split()))
        return EXIT_FAIL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
