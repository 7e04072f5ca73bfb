"""Figures for training runs: a live loss / accuracy plot for notebooks, and the same plot after the fact."""

from __future__ import annotations

import matplotlib.pyplot as plt

from ..train.engine import History


def plot_history(history: History, axes=None, title: str | None = None):
    """Training loss per step and per epoch, with validation accuracy per epoch on the right."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    loss_ax, acc_ax = axes
    loss_ax.clear()
    acc_ax.clear()
    steps = history.step_losses
    if steps:
        per_epoch = len(steps) / max(1, len(history.epochs)) if history.epochs else len(steps)
        loss_ax.plot([i / per_epoch for i in range(len(steps))], steps, alpha=0.35, lw=0.8, label="step")
    if history.epochs:
        loss_ax.plot(history["epoch"], history["train_loss"], "o-", label="epoch mean (train)")
        if "val_loss" in history.last:
            loss_ax.plot(history["epoch"], history["val_loss"], "s--", label="validation")
            acc_ax.plot(history["epoch"], [100 * a for a in history["val_acc"]], "o-", color="C2")
            acc_ax.set_ylabel("validation accuracy (%)")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy")
    loss_ax.legend(frameon=False)
    acc_ax.set_xlabel("epoch")
    if title:
        loss_ax.figure.suptitle(title)
    loss_ax.figure.tight_layout()
    return axes


class LiveCurves:
    """A training callback that redraws :func:`plot_history` in place after every epoch in a notebook."""

    def __init__(self, title: str | None = None):
        self.title = title
        self.figure, self.axes = plt.subplots(1, 2, figsize=(9, 3.2))
        plt.close(self.figure)  # shown through the display handle only, not again at the end of the cell
        self.handle = None

    def __call__(self, history: History) -> None:
        from IPython.display import display

        plot_history(history, self.axes, self.title)
        if self.handle is None:
            self.handle = display(self.figure, display_id=True)
        else:
            self.handle.update(self.figure)
