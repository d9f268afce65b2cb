"""Metric outputs: metrics.jsonl always; TensorBoard and W&B optional (both work offline); a progress bar.

`metrics.jsonl` is the record of truth (its byte position is saved in checkpoints and restored on resume).
TensorBoard and W&B are append-only mirrors: a resumed run may show the steps between the last checkpoint
and the kill twice there.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from bench.results import JsonlWriter

KNOWN_OUTPUTS = ("jsonl", "terminal", "tensorboard", "wandb")


class Logger:
    def __init__(self, run_dir: Path, outputs, *, config_dict: dict, run_name: str, wandb_project: str,
                 wandb_mode: str):  # fmt: skip
        unknown = set(outputs) - set(KNOWN_OUTPUTS)
        if unknown:
            raise ValueError(f"unknown logger output(s) {sorted(unknown)}; choose from {KNOWN_OUTPUTS}")
        self.metrics = JsonlWriter(run_dir / "metrics.jsonl")
        self.tensorboard = None
        self.wandb = None
        if "tensorboard" in outputs:
            from tensorboardX import SummaryWriter

            self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
        if "wandb" in outputs:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.wandb = wandb.init(
                project=wandb_project,
                name=run_name,
                id=run_name.replace("/", "-"),
                dir=str(run_dir),
                mode=wandb_mode,
                config=config_dict,
                resume="allow",
                reinit="finish_previous",
            )

    def write(self, step: int, frames: int, values: dict[str, float]) -> None:
        record = {"step": int(step), "frames": int(frames)}
        record.update({k: _clean(v) for k, v in sorted(values.items())})
        self.metrics.write([record])
        if self.tensorboard is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.tensorboard.add_scalar(key, value, step)
            self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=int(step))

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def _clean(value):
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep it visible
    return value


class MetricAccumulator:
    """Means of scalar metrics between log points; its state goes into checkpoints (exact resume)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict) -> None:
        for key, value in metrics.items():
            value = float(np.asarray(value))
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}

    def reset(self) -> None:
        self.sums.clear()
        self.counts.clear()

    def state(self) -> dict:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def load(self, state: dict) -> None:
        self.sums = {k: float(v) for k, v in state["sums"].items()}
        self.counts = {k: int(v) for k, v in state["counts"].items()}


class Progress:
    """A rich progress bar with steps/s and the latest score; silent when disabled or not a terminal."""

    def __init__(self, total: int, description: str, enabled: bool):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress
            from rich.progress import TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>7.1f} steps/s"),
                TextColumn("score {task.fields[score]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self.bar.start()
            self.task = self.bar.add_task(description, total=total, rate=0.0, score="-")

    def update(self, completed: int, rate: float, score: float | None) -> None:
        if self.bar is not None:
            shown = "-" if score is None else f"{score:.3g}"
            self.bar.update(self.task, completed=completed, rate=rate, score=shown)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
