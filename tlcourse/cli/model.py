"""``tlcourse train``, ``evaluate``, ``robustness`` and ``predict``: the reference solution from a terminal."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

from ..config import get_config
from .common import EXIT_FAIL, EXIT_OK, device_for, err, report_skipped

def cmd_train(args: argparse.Namespace) -> int:
    from ..dashboard import TextProgress
    from ..data import find_classes, load_course_data
    from ..models import build_model
    from ..recipes import CUT_EPOCHS, EPOCHS, VIEWS, train_reference
    from ..training import seed_everything

    config = get_config()
    backbone = args.backbone or config.backbone
    seed = config.seed if args.seed is None else args.seed
    epochs = args.epochs if args.epochs is not None else {"freeze": EPOCHS, "cut": CUT_EPOCHS}.get(args.method, 2)
    views = VIEWS if args.views is None else args.views
    out = Path(args.out) if args.out else config.output_dir / f"{backbone}-{args.method}.pt"
    device = device_for(args.device)

    seed_everything(seed)
    # Build the model first: its weights define the input transform (sizes, normalisation).
    model = build_model(len(find_classes(args.data_dir)), backbone=backbone, offline=config.offline).to(device)
    skipped: list = []  # every photo is decoded up front: a truncated file is skipped and named now
    data = load_course_data(args.data_dir, model.transform_settings, seed=seed, per_class=args.per_class,
                            skipped=skipped, exclusions=config.excluded_csv)
    report_skipped(skipped)
    sizes = data.split.sizes()
    method = {"freeze": "weight freezing", "discriminative": "discriminative learning rates"}.get(
        args.method, f"the blocks from {args.cut or 'the default cut'} on and the head")
    print(f"Training {backbone} ({method}) "
          f"on {device}: {len(data.table)} photos of {', '.join(data.classes)}; split train {sizes['train']}, "
          f"val {sizes['val']}, test {sizes['test']} (seed {seed}); {epochs} epoch(s)", file=sys.stderr)
    started = time.perf_counter()
    # Progress (ours and the recipes' own messages) goes to stderr; stdout keeps only the results.
    with contextlib.redirect_stdout(sys.stderr):
        result = train_reference(model, data, out, args.method, epochs, args.lr, views, args.batch_size, seed,
                                 config.feature_cache, [TextProgress(file=sys.stderr)], device=device, extra={
                                     "epochs": epochs, "data_dir": str(Path(args.data_dir).resolve()),
                                     "per_class": args.per_class}, cut=args.cut)
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


def _checkpoint_on_folder(args: argparse.Namespace):
    """``(device, model, info, table)``: the checkpoint's model and ``args.data_dir`` labelled with its
    classes (skipped files are named)."""
    from ..checkpoint import load_checkpoint
    from ..data import label_folder

    device = device_for(args.device)
    model, info = load_checkpoint(args.checkpoint, device)
    skipped: list = []
    table = label_folder(Path(args.data_dir), info["class_names"], skipped)
    report_skipped(skipped)
    return device, model, info, table


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..data import CSVDataset, eval_transform, make_loader
    from ..evaluation import confusion_frame, predict
    from ..fieldtest import field_report
    from ..inference import for_predictions

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


def cmd_robustness(args: argparse.Namespace) -> int:
    from ..robustness import robustness_report

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


def cmd_predict(args: argparse.Namespace) -> int:
    from ..calibration import Calibration, predict_photo
    from ..checkpoint import load_checkpoint
    from ..data import load_image
    from ..errors import ImageLoadError

    model, info = load_checkpoint(args.checkpoint, device_for(args.device))
    # Calibrated probabilities and the "unsure" threshold, both fitted on validation by `tlcourse train`;
    # an older checkpoint without them gives the plain softmax and never says unsure.
    calibration = Calibration.from_extra(info["extra"])
    results, failures = [], 0
    for image in args.images:
        try:
            answer, _ = predict_photo(model, load_image(image), info["class_names"], info["transform"], calibration,
                                      args.threshold)
        except ImageLoadError as error:  # missing, not an image, truncated: say so and go on with the others
            err(str(error))
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
