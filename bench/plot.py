"""`bench plot`: learning curves of individual runs, side by side (one line per run folder).

Top panel: a score field of the training episodes (a moving average over episodes, by the agent step at
which each episode ended) with the evaluation rounds as markers. Further panels: metrics from
`metrics.jsonl` (e.g. `context/change_rate`, `dyn/gate/open_rate`), one panel each. Reads only the run's
JSON files, so it works on running, finished and published runs alike.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.results import read_jsonl


class PlotError(ValueError):
    """A bad argument to `bench plot` (printed as one line by the CLI)."""


def find_runs(paths: list[str]) -> list[Path]:
    """Run folders (those holding scores.jsonl) under each path, in a stable order."""
    runs = []
    for path in map(Path, paths):
        if not path.exists():
            raise PlotError(f"no such folder: {path}")
        found = [path] if (path / "scores.jsonl").exists() else sorted(p.parent for p in path.rglob("scores.jsonl"))
        if not found:
            raise PlotError(f"no run folder (with a scores.jsonl) under {path}")
        runs.extend(found)
    return runs


def run_label(folder: Path) -> str:
    """`agent seedN` from the run folder layout suite/task/agent/config-hash/seedN, else the folder name."""
    parts = folder.parts
    return f"{parts[-3]} {parts[-1]}" if len(parts) >= 3 else folder.name


def run_labels(runs: list[Path]) -> list[str]:
    """Labels of the runs; where two would read the same, each gets its config hash too."""
    labels = [run_label(folder) for folder in runs]
    return [
        f"{label} ({folder.parent.name})" if labels.count(label) > 1 else label for label, folder in zip(labels, runs)
    ]


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    if values.size == 0:
        return values
    window = max(1, min(window, values.size))
    sums = np.cumsum(np.insert(values.astype(float), 0, 0.0))
    averaged = (sums[window:] - sums[:-window]) / window
    head = sums[1:window] / np.arange(1, window)  # growing window for the first episodes
    return np.concatenate([head, averaged])


def run_curves(folder: Path, field: str, metrics: list[str], window: int) -> dict:
    scores = read_jsonl(folder / "scores.jsonl")
    train = [s for s in scores if s["mode"] == "train" and field in s and not s.get("broken")]
    evals = {}
    for s in scores:
        if s["mode"] == "eval" and field in s and not s.get("broken"):
            evals.setdefault(s["step"], []).append(float(s[field]))
    curves = {
        "train": (np.array([s["step"] for s in train]), moving_average(np.array([s[field] for s in train]), window)),
        "eval": (np.array(sorted(evals)), np.array([np.mean(evals[k]) for k in sorted(evals)])),
    }
    records = read_jsonl(folder / "metrics.jsonl") if (folder / "metrics.jsonl").exists() else []
    for name in metrics:
        rows = [(r["step"], r[name]) for r in records if name in r and "step" in r]
        curves[name] = (np.array([s for s, _ in rows]), np.array([v for _, v in rows], dtype=float))
    return curves


def plot(runs: list[Path], field: str, metrics: list[str], window: int, out: Path, title: str | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 1 + len(metrics)
    fig, axes = plt.subplots(panels, 1, figsize=(7.5, 3.2 * panels), sharex=True, squeeze=False)
    axes = axes[:, 0]
    labels = run_labels(runs)
    for index, (folder, label) in enumerate(zip(runs, labels)):
        curves = run_curves(folder, field, metrics, window)
        color = f"C{index % 10}"
        steps, values = curves["train"]
        axes[0].plot(steps, values, color=color, label=f"{label} (train, mean of {window} episodes)")
        steps, values = curves["eval"]
        if steps.size:
            axes[0].plot(steps, values, "o", color=color, markersize=5, label=f"{label} (evaluation)")
        for axis, name in zip(axes[1:], metrics):
            steps, values = curves[name]
            if steps.size:  # runs without this metric (e.g. DreamerV3 next to THICK) stay out of the panel
                axis.plot(steps, values, color=color, label=label)
    axes[0].set_ylabel(field)
    axes[0].legend(fontsize=7)
    for axis, name in zip(axes[1:], metrics):
        axis.set_ylabel(name)
        axis.legend(fontsize=7)
    for axis in axes:
        axis.grid(alpha=0.3)
    axes[-1].set_xlabel("agent steps")
    axes[0].set_title(title or " vs ".join(labels))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".tmp" + out.suffix)
    fig.savefig(temporary, dpi=110)
    plt.close(fig)
    temporary.replace(out)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run folders, or folders to search for runs")
    parser.add_argument("--field", default="return", help="score field of the episodes (default: return)")
    parser.add_argument("--metrics", nargs="*", default=[], help="metrics.jsonl keys, one panel each")
    parser.add_argument("--window", type=int, default=10, help="episodes in the moving average")
    parser.add_argument("--out", default="curves.png", help="image file to write (PNG, SVG or PDF)")
    parser.add_argument("--title")


def run(args) -> int:
    if args.window < 1:
        raise PlotError(f"--window must be >= 1, got {args.window}")
    runs = find_runs(args.runs)
    out = plot(runs, args.field, args.metrics, args.window, Path(args.out), args.title)
    print(f"wrote {out} ({len(runs)} runs)")
    return 0
