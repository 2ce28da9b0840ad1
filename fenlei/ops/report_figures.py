"""The charts of ``fenlei report`` as PNG bytes (matplotlib, Agg backend): learning curves, the reliability diagram
before and after temperature scaling, and the curves of several runs overlaid. The confusion matrix is the test
report's own (``fenlei.training.reporting.confusion_matrix_png``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np

from fenlei.ops.report_analysis import ReliabilityBins
from fenlei.ops.report_data import Series
from fenlei.plotting import pyplot
from fenlei.training.reporting import figure_png

# Validation figures drawn per epoch, where the run logged them (classification and numeric-target runs alike).
EPOCH_METRICS = ("val/f1_macro", "val/acc", "val/f1_weighted", "val/top5", "val/ece", "train/acc")
MAX_LR_LINES = 6


def _xy(series: Series, by_epoch: bool) -> tuple[list[float], list[float]]:
    points = [(epoch if by_epoch and epoch is not None else step, value) for step, epoch, value in series]
    return [x for x, _ in points], [y for _, y in points]


def distinct_lr_series(curves: dict[str, Series]) -> list[tuple[str, Series]]:
    """The learning-rate series (``lr-*`` columns) with identical schedules merged under one name."""
    groups: dict[tuple[float, ...], list[str]] = {}
    for key in sorted(k for k in curves if k.startswith("lr-")):
        groups.setdefault(tuple(v for _, _, v in curves[key]), []).append(key)
    merged = []
    for names in groups.values():
        label = names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} same)"
        merged.append((label, curves[names[0]]))
    return merged[:MAX_LR_LINES]


def learning_curves_png(curves: dict[str, Series], title: str) -> Optional[bytes]:
    """Loss by step (training steps, epoch means, validation), validation metrics by epoch, learning rates by
    step; None when metrics.csv holds none of them."""
    loss_keys = [k for k in ("train/loss_step", "train/loss", "train/loss_epoch", "val/loss") if k in curves]
    epoch_keys = [k for k in EPOCH_METRICS if k in curves]
    lrs = distinct_lr_series(curves)
    panels = [p for p, present in (("loss", loss_keys), ("epoch", epoch_keys), ("lr", lrs)) if present]
    if not panels:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "loss":
            for key in loss_keys:
                x, y = _xy(curves[key], by_epoch=False)
                step_wise = key in ("train/loss_step", "train/loss")
                ax.plot(x, y, label=key, linewidth=0.8 if step_wise else 1.6, alpha=0.6 if step_wise else 1.0,
                        marker=None if step_wise else "o", markersize=4)
            ax.set_xlabel("step")
            ax.set_title("loss")
        elif panel == "epoch":
            for key in epoch_keys:
                x, y = _xy(curves[key], by_epoch=True)
                ax.plot(x, y, label=key, marker="o", markersize=4)
            ax.set_xlabel("epoch")
            ax.set_title("metrics by epoch")
        else:
            for label, series in lrs:
                x, y = _xy(series, by_epoch=False)
                ax.plot(x, y, label=label, linewidth=1.2)
            ax.set_xlabel("step")
            ax.set_title("learning rate")
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return figure_png(fig, dpi=100)


def reliability_png(panels: Sequence[tuple[str, ReliabilityBins]]) -> bytes:
    """One column per (title, bins): accuracy against mean confidence per bin over the diagonal, the gap shaded,
    and below it how many rows each bin holds."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(panels), figsize=(4.6 * len(panels), 5.6), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    for column, (title, bins) in enumerate(panels):
        top, bottom = axes[0][column], axes[1][column]
        width = bins.edges[1] - bins.edges[0]
        centres = bins.edges[:-1] + width / 2
        filled = bins.count > 0
        top.plot([0, 1], [0, 1], linestyle="--", color="#888888", linewidth=1, label="perfect calibration")
        top.bar(centres[filled], bins.accuracy[filled], width=width * 0.95, color="#4C72B0", label="accuracy")
        gap = bins.confidence[filled] - bins.accuracy[filled]
        top.bar(centres[filled], gap, bottom=bins.accuracy[filled], width=width * 0.95, color="#C44E52", alpha=0.35,
                label="gap to mean confidence")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel("accuracy")
        top.set_title(f"{title}\nECE {bins.ece:.4f}, {int(bins.count.sum())} rows", fontsize=10)
        top.legend(fontsize=7, loc="upper left")
        bottom.bar(centres, bins.count, width=width * 0.95, color="#8C8C8C")
        bottom.set_xlabel("confidence (top-label probability)")
        bottom.set_ylabel("rows")
    fig.tight_layout()
    return figure_png(fig, dpi=100)


def comparison_curves_png(runs: Sequence[tuple[str, dict[str, Series]]]) -> Optional[bytes]:
    """The runs' validation macro-F1 and validation loss by epoch and training loss by step, overlaid."""
    panels = [("val/f1_macro", True), ("val/loss", True), ("train/loss_step", False)]
    panels = [(key, by_epoch) for key, by_epoch in panels if any(key in curves for _, curves in runs)]
    if not panels:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (key, by_epoch) in zip(axes[0], panels, strict=True):
        for name, curves in runs:
            if key in curves:
                x, y = _xy(curves[key], by_epoch)
                ax.plot(x, y, label=name, marker="o" if by_epoch else None, markersize=4,
                        linewidth=1.6 if by_epoch else 0.9)
        ax.set_xlabel("epoch" if by_epoch else "step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig, dpi=100)


def confusion_png(gold: np.ndarray, pred: np.ndarray, labels: Sequence[str]) -> bytes:
    from fenlei.training.reporting import confusion_matrix_png

    return confusion_matrix_png(gold, pred, labels)
