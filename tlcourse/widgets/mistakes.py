"""The mistakes browser: predictions worst first, with a reversible "leave out: wrong label" mark."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from torch import nn

from ..data import CSVDataset, TransformSettings, eval_transform, label_folder, load_image, make_loader
from ..errors import ConfigError, DataError
from ..evaluation import predict
from ..exclusions import REASONS, ExclusionList, as_exclusion_list
from .common import interactive, jpeg_bytes

#: Sort orders: column, ascending.
SORTS = {"loss": ("loss", False), "confidence": ("confidence", True)}


def with_loss(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` (from :func:`tlcourse.evaluation.predict`) plus each photo's cross-entropy ``loss``,
    ``-log p(true class)``: large for confident mistakes, near 0 for confident right answers."""
    probs = results[[c for c in results.columns if c.startswith("prob_")]].to_numpy()
    p_true = probs[np.arange(len(results)), results["label"].to_numpy()]
    out = results.copy()
    out["loss"] = -np.log(np.clip(p_true, 1e-12, 1.0))
    out["confidence"] = probs.max(1)
    return out


class MistakesBrowser:
    """Step through predictions, worst first, and mark photos that do not belong in the data. Taught in lesson 5.

    ``results``: one row per photo, as :func:`tlcourse.evaluation.predict` returns, plus ``file_path``.
    ``sort``: ``"loss"`` (highest first: confident mistakes, then close calls) or ``"confidence"`` (lowest
    first). With ``exclusions`` (a CSV path, the course's is ``cfg.excluded_csv``, or an
    :class:`ExclusionList`) it offers to mark the photo shown as "leave out of the data"; the file is not touched."""

    def __init__(self, results: pd.DataFrame, class_names: Sequence[str], sort: str = "loss",
                 exclusions: ExclusionList | str | Path | None = None, mode: str = "auto"):
        missing = {"file_path", "label", "pred"} - set(results.columns)
        if missing:
            raise DataError(f"results lack column(s) {sorted(missing)}: add the photos' paths, e.g. "
                             "results['file_path'] = data.part('test')['file_path'].to_numpy()")
        self.results = with_loss(results.reset_index(drop=True))
        self.class_names = list(class_names)
        self.exclusions = as_exclusion_list(exclusions)
        self.mode = mode
        self.sort, self.true_class, self.pred_class = sort, None, None
        self.index = 0
        self.widget: Any = None
        self._apply()

    @classmethod
    def from_folder(cls, model: nn.Module, folder: str | Path, class_names: Sequence[str],
                    settings: TransformSettings | None = None, batch_size: int = 32,
                    **kwargs: Any) -> "MistakesBrowser":
        """Predict every photo in a folder of class subfolders (say, the field test) and browse the results.

        The folder's subfolder names must be among ``class_names`` (the model's classes)."""
        class_names = list(class_names)
        table = label_folder(folder, class_names)  # a folder of only some of the classes is fine
        settings = settings or getattr(model, "transform_settings", TransformSettings())
        results = predict(model, make_loader(CSVDataset(table, eval_transform(settings)), batch_size))
        results["file_path"] = table["file_path"].to_numpy()
        return cls(results, class_names, **kwargs)

    def _apply(self) -> None:
        if self.sort not in SORTS:
            raise ConfigError(f"sort must be one of {list(SORTS)}, got {self.sort!r}")
        column, ascending = SORTS[self.sort]
        view = self.results
        if self.true_class is not None:
            view = view[view["label"] == self.class_names.index(self.true_class)]
        if self.pred_class is not None:
            view = view[view["pred"] == self.class_names.index(self.pred_class)]
        self.view = view.sort_values(column, ascending=ascending, kind="stable")
        self.index = 0
        self._refresh()

    def set_sort(self, sort: str) -> None:
        self.sort = sort
        self._apply()

    def set_filter(self, true_class: str | None = None, pred_class: str | None = None) -> None:
        """Show only photos of this true and/or predicted class (``None``: any)."""
        for name in (true_class, pred_class):
            if name is not None and name not in self.class_names:
                raise DataError(f"Unknown class {name!r}; the classes are {self.class_names}.")
        self.true_class, self.pred_class = true_class, pred_class
        self._apply()

    @property
    def current(self) -> pd.Series | None:
        """The row shown now (``None`` when the filter leaves nothing)."""
        return self.view.iloc[self.index] if len(self.view) else None

    def next(self) -> None:
        if self.index < len(self.view) - 1:
            self.index += 1
            self._refresh()

    def previous(self) -> None:
        if self.index > 0:
            self.index -= 1
            self._refresh()

    def is_marked(self) -> bool:
        row = self.current
        return row is not None and self.exclusions is not None and row["file_path"] in self.exclusions

    def mark(self, reason: str = REASONS[0]) -> None:
        """Put the current photo on the exclusion list (the file stays where it is)."""
        row = self.current
        if row is None or self.exclusions is None:
            return
        self.exclusions.mark(row["file_path"], reason, class_name=self.class_names[int(row["label"])])
        self._refresh()

    def unmark(self) -> None:
        row = self.current
        if row is not None and self.exclusions is not None:
            self.exclusions.unmark(row["file_path"])
            self._refresh()

    def describe(self, row: pd.Series) -> str:
        """One line about a row: true and predicted class, probability, loss, file name."""
        true, pred = self.class_names[int(row["label"])], self.class_names[int(row["pred"])]
        verdict = "right" if true == pred else "WRONG"
        return (f"true: {true} · predicted: {pred} ({row['confidence']:.1%}) · {verdict} · "
                f"loss {row['loss']:.3f} · {Path(row['file_path']).name}")

    def build(self) -> Any:
        """Create the ipywidgets panel (done by :meth:`show`; tests call it directly)."""
        import ipywidgets as w

        anyone = [("any", "")] + [(name, name) for name in self.class_names]  # "" not None: None shows blank
        self.sort_menu = w.Dropdown(options=[("highest loss first", "loss"), ("least confident first", "confidence")],
                                    value=self.sort, description="order", layout=w.Layout(width="240px"))
        self.true_menu = w.Dropdown(options=anyone, value=self.true_class or "", description="true",
                                    layout=w.Layout(width="180px"))
        self.pred_menu = w.Dropdown(options=anyone, value=self.pred_class or "", description="predicted",
                                    layout=w.Layout(width="200px"))
        self.previous_button = w.Button(description="Previous", icon="arrow-left", layout=w.Layout(width="110px"))
        self.next_button = w.Button(description="Next", icon="arrow-right", layout=w.Layout(width="110px"))
        self.position = w.HTML()
        self.image = w.Image(format="jpeg", layout=w.Layout(align_self="flex-start"))  # its own size, not stretched
        self.info = w.HTML()
        self.reason_menu = w.Dropdown(options=list(REASONS), value=REASONS[0], layout=w.Layout(width="200px"))
        self.mark_button = w.Button(layout=w.Layout(width="220px"))
        for widget, name in ((self.previous_button, "previous"), (self.next_button, "next"),
                             (self.position, "position"), (self.image, "mistake-photo"), (self.info, "mistake-info"),
                             (self.mark_button, "mark")):
            widget.add_class(f"tlcourse-{name}")
        self.sort_menu.observe(lambda c: self.set_sort(c["new"]), names="value")
        self.true_menu.observe(lambda c: self.set_filter(c["new"] or None, self.pred_class), names="value")
        self.pred_menu.observe(lambda c: self.set_filter(self.true_class, c["new"] or None), names="value")
        self.previous_button.on_click(lambda _: self.previous())
        self.next_button.on_click(lambda _: self.next())
        self.mark_button.on_click(lambda _: self.unmark() if self.is_marked() else self.mark(self.reason_menu.value))
        marking = ([w.HTML("Leave out of the data:"), self.reason_menu, self.mark_button]
                   if self.exclusions is not None else [])
        self.widget = w.VBox([
            w.HBox([self.sort_menu, self.true_menu, self.pred_menu]),
            w.HBox([self.previous_button, self.next_button, self.position]),
            self.image, self.info, w.HBox(marking),
        ])
        self.widget.add_class("tlcourse-mistakes")
        self._refresh()
        return self.widget

    def _refresh(self) -> None:
        if self.widget is None:
            return
        row = self.current
        self.previous_button.disabled = row is None or self.index == 0
        self.next_button.disabled = row is None or self.index >= len(self.view) - 1
        self.mark_button.disabled = row is None
        if row is None:
            self.position.value = "no photos match this filter"
            self.image.value = b""
            self.info.value = ""
            return
        self.position.value = f"{self.index + 1} / {len(self.view)}"
        self.image.value = jpeg_bytes(load_image(row["file_path"]), max_side=360)
        right = row["label"] == row["pred"]
        color = "#2ca02c" if right else "#d62728"
        self.info.value = f'<div style="color:{color};font-size:1.05em">{html.escape(self.describe(row))}</div>'
        reason = self.exclusions.reason(row["file_path"]) if self.exclusions is not None else None
        marked = reason is not None  # one read of the list per step
        if marked:
            self.info.value += (f'<div class="tlcourse-marked" style="color:#b00">left out of the data: '
                                f'{html.escape(reason)}</div>')
        self.mark_button.description = "Unmark (use it again)" if marked else "Mark: leave out"
        self.mark_button.button_style = "" if marked else "warning"

    def table(self, n: int = 10) -> pd.DataFrame:
        """The first ``n`` rows of the current view, readable."""
        rows = self.view.head(n)
        return pd.DataFrame({
            "photo": [Path(p).name for p in rows["file_path"]],
            "true": [self.class_names[int(k)] for k in rows["label"]],
            "predicted": [self.class_names[int(k)] for k in rows["pred"]],
            "confidence": rows["confidence"].round(3).to_numpy(),
            "loss": rows["loss"].round(3).to_numpy(),
        })

    def show(self, n: int = 5) -> None:
        """Show the browser (widgets) or, without widgets, a table and a figure of the first ``n`` photos."""
        if interactive(self.mode):
            from IPython.display import display

            display(self.build())
            return
        import matplotlib.pyplot as plt

        order = "highest loss first" if self.sort == "loss" else "least confident first"
        print(f"{len(self.view)} photo(s), {order}:")
        print(self.table(max(n, 10)).to_string(index=False))
        rows = self.view.head(n)
        if len(rows) == 0:
            return
        fig, axes = plt.subplots(1, len(rows), figsize=(3 * len(rows), 3.4), squeeze=False)
        for ax, (_, row) in zip(axes[0], rows.iterrows()):
            ax.imshow(load_image(row["file_path"]))
            right = row["label"] == row["pred"]
            ax.set_title(f"true: {self.class_names[int(row['label'])]}\npredicted: "
                         f"{self.class_names[int(row['pred'])]} ({row['confidence']:.0%})",
                         color="tab:green" if right else "tab:red", fontsize=10)
            ax.axis("off")
        fig.suptitle(f"The first {len(rows)}, {order}")
        plt.tight_layout()
        plt.show()
