"""The notebook API: `bench.run`, `bench.load_runs`, `bench.load_episodes`, `bench.leaderboard`.

    import bench
    folder = bench.run("dreamerv3", "toy", "reach", configs=["debug"], steps=3000, logdir="runs")
    scores = bench.load_runs("toy", roots=["runs"], any_budget=True)       # one row per finished run
    board = bench.leaderboard("toy", runs=["runs"], any_budget=True, reps=2000)
    board.table, board.index_html, board.plots                              # summary, HTML page, PNGs

Each call does what the command line does (`bench run`, `bench leaderboard`): a run that already finished
is skipped, an unfinished one resumes, and the same arguments give the same run folder as the CLI.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def run(
    agent: str,
    suite: str,
    task: str | None = None,
    *,
    seed: int | None = None,
    seeds: Sequence[int] | None = None,
    configs: Sequence[str] = (),
    steps: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    logdir: str | Path | None = None,
    quiet: bool = True,
    restart: bool = False,
) -> Path | list[Path]:
    """Train and evaluate like `bench run`; returns the run folder (a list when several tasks or seeds).

    `task=None` runs every task of the suite; `overrides` are dotted config keys, e.g.
    {"run.train_ratio": 64, "env.frame_stack": 4}. Runs execute one after the other in this process;
    Ctrl-C saves a checkpoint and raises `bench.runner.RunStopped` (run again to resume).
    """
    from bench import config as config_lib
    from bench import registry, runner

    if seed is not None and seeds is not None:
        raise ValueError("give seed or seeds, not both")
    seed_list = list(seeds) if seeds is not None else [0 if seed is None else int(seed)]
    settings = dict(overrides or {})
    if steps is not None:
        if int(steps) != steps or steps <= 0:
            raise config_lib.ConfigError(f"steps: expected a positive whole number, got {steps}")
        settings["run.steps"] = int(steps)
    spec = registry.get_suite(suite)
    tasks = [spec.resolve_task(task)] if task else list(spec.tasks)
    command = _python_call("run", agent, suite, task, seed=seed, seeds=seeds, configs=list(configs) or None,
                           steps=steps, overrides=dict(overrides) if overrides else None)  # fmt: skip
    folders = []
    for name in tasks:
        resolved = runner.resolve(agent, suite, name, list(configs), settings)
        for value in seed_list:
            folders.append(runner.run(resolved, seed=value, root=logdir, quiet=quiet, command=command,
                                      restart=restart))  # fmt: skip
    return folders[0] if len(folders) == 1 else folders


def _python_call(name: str, *args, **kwargs) -> str:
    """How the manifest records the call (the CLI records its command line)."""
    shown = [repr(a) for a in args if a is not None] + [f"{k}={v!r}" for k, v in kwargs.items() if v is not None]
    return f"bench.{name}({', '.join(shown)})"


# ------------------------------------------------------------------------------------------- results


def load_runs(suite: str, roots: Sequence[str | Path] | None = None, *, protocol: str | None = None,
              any_budget: bool = False):  # fmt: skip
    """A pandas DataFrame with one row per finished run of `suite` under the results roots.

    Columns: task, agent, config_hash, method (agent@hash, the leaderboard's row label), seed, score (the
    run's final score in the suite's unit, under the suite's evaluation protocol or `protocol`),
    episodes (how many episodes the score averages), broken (episodes excluded), folder. Runs the
    leaderboard would skip (unfinished, other budget unless `any_budget`) are left out; see `bench leaderboard`'s
    Report for the reasons. Default roots are the leaderboard's: results/ and runs/ (or $BENCH_ROOT).
    """
    import pandas as pd

    from leaderboard import load

    info = load.suite_info(suite, protocol)
    rows = []
    for root in [Path(r) for r in roots] if roots else load.default_roots():
        for folder in load.find_run_folders(root, info.name):
            result = load.read_run(folder, info, any_budget=any_budget)
            if isinstance(result, str):
                continue
            rows.append({
                "task": result.task, "agent": result.agent, "config_hash": result.config_hash,
                "method": result.method, "seed": result.seed, "score": result.raw, "episodes": result.episodes,
                "broken": result.broken, "folder": str(result.folder),
            })  # fmt: skip
    columns = ["task", "agent", "config_hash", "method", "seed", "score", "episodes", "broken", "folder"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["method", "task", "seed"], ignore_index=True)


def load_episodes(folder: str | Path):
    """A pandas DataFrame of every episode a run recorded (its scores.jsonl: mode, step, frames, return, ...)."""
    import json

    import pandas as pd

    path = Path(folder) / "scores.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (is {folder} a run folder?)")
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


@dataclasses.dataclass(frozen=True)
class Leaderboard:
    """What `bench.leaderboard` wrote: the output folder, its HTML page, and the summary table."""

    out: Path
    table: Any  # pandas DataFrame of aggregates.csv: one row per method (IQM, mean, median, ... with CIs)

    @property
    def index_html(self) -> Path:
        return self.out / "index.html"

    @property
    def plots(self) -> list[Path]:
        return sorted(path for path in self.out.glob("*.png") if path.name != "screenshot.png")


def leaderboard(suite: str, *, runs: Sequence[str | Path] | None = None, out: str | Path | None = None,
                reps: int = 50_000, quiet: bool = True, **options) -> Leaderboard:  # fmt: skip
    """Build a leaderboard exactly as `bench leaderboard --suite SUITE ...` does.

    `options` are the command's other flags with underscores (tasks=["reach"], any_budget=True,
    no_references=True, protocol="train_window", no_plots=True, ...).
    """
    import argparse

    import pandas as pd

    from leaderboard import cli as leaderboard_cli

    parser = argparse.ArgumentParser(prog="bench leaderboard")
    leaderboard_cli.add_leaderboard_arguments(parser)
    argv = ["--suite", suite, "--reps", str(reps)]
    if runs:
        argv += ["--runs", *map(str, runs)]
    if out is not None:
        argv += ["--out", str(out)]
    if quiet:
        argv.append("--quiet")
    args = parser.parse_args(argv)
    known = vars(args)
    for key, value in options.items():
        if key not in known:
            raise TypeError(f"leaderboard() got an unknown option {key!r}; options: {', '.join(sorted(known))}")
        setattr(args, key, value)
    leaderboard_cli.run_leaderboard(args)
    folder = Path(args.out or Path("leaderboard_out") / suite)
    csv = folder / "aggregates.csv"
    return Leaderboard(folder, pd.read_csv(csv) if csv.exists() else None)

