"""Build a leaderboard in memory: load runs and references, normalise, choose tasks, bootstrap.

A leaderboard is a pure function of the result files, the shipped references and the options (seed and
reps included): `leaderboard.render` writes it out byte for byte the same every time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from leaderboard import aggregate, curves, load
from leaderboard.errors import UnknownNameError
from leaderboard.normalize import Normaliser

KIND_NAMES = {"runs": "our runs", "reference": "published runs", "table": "published table"}


@dataclasses.dataclass
class Row:
    method: load.Method
    normalised: dict[str, list[float]]  # task -> normalised final score per run
    in_aggregate: bool = False
    why_not: str = ""  # why a row is left out of the aggregate statistics
    stats: aggregate.MethodStats | None = None
    table_means: dict[str, tuple[float, float | None]] = dataclasses.field(default_factory=dict)
    curve: curves.SampleEfficiency | None = None

    @property
    def label(self) -> str:
        return self.method.label

    def runs_range(self, tasks: Sequence[str]) -> tuple[int, int]:
        counts = [len(self.normalised.get(task, ())) for task in tasks]
        return (min(counts), max(counts)) if counts else (0, 0)

    def table_aggregate(self, tasks: Sequence[str]) -> dict[str, float] | None:
        """Mean and median of the published per-task means (table-only rows on all tasks)."""
        if any(task not in self.table_means for task in tasks):
            return None
        means = np.array([self.table_means[task][0] for task in tasks])
        return {"mean": float(means.mean()), "median": float(np.median(means))}


@dataclasses.dataclass(frozen=True)
class Improvement:
    x: str
    y: str
    probability: aggregate.Interval
    tasks: int


@dataclasses.dataclass
class Leaderboard:
    suite: load.SuiteInfo
    normaliser: str
    tasks: tuple[str, ...]  # the tasks the aggregates are computed over
    task_selection: str
    reps: int
    seed: int
    rows: list[Row]
    improvements: list[Improvement]
    taus: np.ndarray
    curve_edges: np.ndarray | None
    report: load.LoadReport
    roots: tuple[str, ...]


def _choose_tasks(
    selection: Sequence[str] | None, info: load.SuiteInfo, rows: list[Row]
) -> tuple[tuple[str, ...], str]:
    if not selection or list(selection) == ["all"]:
        return info.tasks, f"all {len(info.tasks)} tasks of the suite"
    if list(selection) == ["common"]:
        covered = [set(row.normalised) for row in rows if row.method.kind != "table" and row.normalised]
        if not covered:
            raise ValueError("--tasks common: no method has per-run scores")
        common = set.intersection(*covered)
        tasks = tuple(task for task in info.tasks if task in common)
        if not tasks:
            raise ValueError("--tasks common: the methods share no task")
        return tasks, f"the {len(tasks)} tasks every method with per-run scores has"
    unknown = [task for task in selection if task not in info.tasks]
    if unknown:
        raise UnknownNameError(f"unknown task(s) {', '.join(map(repr, unknown))} for suite {info.name!r}; "
                       f"tasks: {', '.join(info.tasks)}")  # fmt: skip
    return tuple(dict.fromkeys(selection)), f"{len(set(selection))} selected tasks"


def _profile_taus(info: load.SuiteInfo, rows: list[Row]) -> np.ndarray:
    upper = info.scoring.profile_max
    if upper is None:
        values = [v for row in rows if row.in_aggregate for vs in row.normalised.values() for v in vs]
        upper = max(values) if values else 1.0
        upper = upper if upper > 0 else 1.0
    return np.linspace(0.0, float(upper), 101)


def _default_pairs(rows: list[Row]) -> list[tuple[str, str]]:
    ranked = [row.label for row in rows if row.in_aggregate]
    ours = [row.label for row in rows if row.in_aggregate and row.method.kind == "runs"]
    if ours:  # each of ours against every other row; two of ours once, the better ranked as X
        return [(x, y) for i, x in enumerate(ours) for y in ranked if y != x and y not in ours[:i]]
    return [(ranked[0], y) for y in ranked[1:]] if ranked else []


def build(
    suite: str,
    *,
    roots: Sequence[Path] | None = None,
    protocol: str | None = None,
    reps: int = 50_000,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    references: bool = True,
    compare: Sequence[tuple[str, str]] | None = None,
    curve_points: int = 10,
    any_budget: bool = False,
    skip_invalid: bool = False,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
    plan=None,
) -> Leaderboard:
    """`progress(description, total)` returns an `advance(n)` callback (or pass None). `plan` (a
    `bench.plan.Plan`) limits our runs to the plan's and names the plan and its hash in the board."""
    if reps < 1:
        raise ValueError(f"--reps must be >= 1, got {reps}")
    info = load.suite_info(suite, protocol)
    report = load.LoadReport(notes=list(info.notes))
    roots = list(load.default_roots() if roots is None else roots)
    info = load.with_run_tasks(info, roots)
    only = None
    if plan is not None:
        from bench import plan as plan_lib

        only = {}
        for run in plan_lib.resolve_runs(plan):
            if only.setdefault(run.key, run.label) != run.label:
                raise ValueError(f"plan entries {only[run.key]!r} and {run.label!r} resolve to the same run "
                                 f"{run.name}: they name one configuration twice")  # fmt: skip
        report.notes.append(f"{plan.describe()}: {plan.about}".rstrip(": "))
        tasks = tasks or list(plan.tasks)
        if plan.steps and plan.steps != info.budget:  # the plan fixes the budget of every run it names
            report.notes.append(f"budget: the plan's {plan.steps:,} agent steps (the suite's is {info.budget:,})")
            info = dataclasses.replace(info, budget=plan.steps)
        report.notes += [f"left out by the plan: {line}" for line in plan.runs()[1]]
    loaded = load.load_runs(roots, info, report, any_budget=any_budget, skip_invalid=skip_invalid, only=only)
    if references:
        loaded += load.load_references(info, report)
    if methods:
        available = [m.label for m in loaded]
        missing = [name for name in methods if name not in available]
        if missing:
            raise UnknownNameError(f"no method {', '.join(map(repr, missing))} in suite {suite!r}; "
                           f"available: {', '.join(available) or 'none'}")  # fmt: skip
        loaded = [m for m in loaded if m.label in methods]
    labels = [m.label for m in loaded]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"two rows share the label(s) {', '.join(duplicates)}")
    normaliser = Normaliser(info.scoring)
    rows = []
    for method in loaded:
        normalised = {task: [normaliser(task, v) for v in values] for task, values in method.raw.items()}
        row = Row(method, normalised)
        row.table_means = {
            task: (normaliser(task, mean), None if std is None else _scale_std(normaliser, task, mean, std))
            for task, (mean, std) in method.table.items()
        }
        rows.append(row)
    chosen, selection_text = _choose_tasks(tasks, info, rows)
    for row in rows:
        if row.method.kind == "table":
            row.why_not = "published means only (no per-run scores): shown, not bootstrapped"
            continue
        missing = [task for task in chosen if task not in row.normalised]
        if missing:
            row.why_not = f"no scores on {len(missing)} of {len(chosen)} tasks: {', '.join(missing)}"
            continue
        row.in_aggregate = True
    taus = _profile_taus(info, rows)
    end_frames = info.budget_frames or max(
        (
            float(c.frames.max())
            for row in rows
            for cs in row.method.curves.values()
            for c in cs
            if len(c.frames)
        ),
        default=0.0,
    )
    edges = curves.grid(end_frames, curve_points) if end_frames > 0 else None

    aggregated = [row for row in rows if row.in_aggregate]
    gamma = info.scoring.gap_target
    metrics = (
        aggregate.METRICS
        if gamma is not None
        else tuple(m for m in aggregate.METRICS if m != "optimality_gap")
    )
    score_sets = {row.label: aggregate.ScoreSet.from_mapping(chosen, row.normalised) for row in aggregated}
    # rank by the IQM point estimate first: the default comparisons (best row vs the others) depend on it
    iqm = {label: aggregate.point_estimates(s)["iqm"] for label, s in score_sets.items()}
    rows = _ordered(rows, chosen, iqm)
    pairs = [tuple(pair) for pair in compare] if compare else _default_pairs(rows)
    by_label = {row.label: row for row in rows}
    for x, y in pairs:
        for label in (x, y):
            if label not in by_label:
                raise UnknownNameError(f"--compare: no method {label!r}; available: {', '.join(by_label)}")
            if not by_label[label].in_aggregate:
                raise ValueError(f"--compare: {label!r} is not in the aggregate ({by_label[label].why_not})")
        if x == y:
            raise ValueError(f"--compare: cannot compare {x!r} with itself")
    if len(set(pairs)) != len(pairs):
        raise ValueError("--compare: a pair is given twice")
    advance = _progress(progress, "bootstrap: metrics, profiles, improvement", reps * len(aggregated))
    stats, comparisons = aggregate.bootstrap_all(
        score_sets, reps=reps, seed=seed, pairs=pairs, gamma=gamma if gamma is not None else 1.0, taus=taus,
        metrics=metrics, advance=advance,
    )  # fmt: skip
    for row in aggregated:
        row.stats = stats[row.label]
    improvements = [Improvement(c.x, c.y, c.probability, len(c.tasks)) for c in comparisons]

    if edges is not None:
        with_curves = [row for row in aggregated if any(row.method.curves.get(t) for t in chosen)]
        advance = _progress(
            progress, "bootstrap: sample-efficiency curves", reps * curve_points * len(with_curves)
        )
        for row in with_curves:
            row.curve = curves.sample_efficiency(
                row.method, chosen, edges, info.scoring, normaliser, reps=reps, seed=seed, advance=advance
            )
    return Leaderboard(
        suite=info, normaliser=normaliser.describe(), tasks=chosen, task_selection=selection_text, reps=reps,
        seed=seed, rows=rows, improvements=improvements, taus=taus, curve_edges=edges, report=report,
        roots=tuple(load.display_path(root) for root in roots),
    )  # fmt: skip


def _progress(progress, description: str, total: int):
    return progress(description, total) if progress and total > 0 else None


def _scale_std(normaliser: Normaliser, task: str, mean: float, std: float) -> float:
    """A standard deviation through an affine normaliser: its slope times the std."""
    del mean  # affine: the slope is the same everywhere
    return abs(normaliser(task, 1.0) - normaliser(task, 0.0)) * std


def _ordered(rows: list[Row], tasks: Sequence[str], iqm: dict[str, float]) -> list[Row]:
    """Bootstrapped rows by IQM (best first), then rows left out of the aggregate, then table-only rows."""

    def key(row: Row):
        if row.in_aggregate:
            return (0, -iqm[row.label], row.label)
        if row.method.kind != "table":
            return (1, 0.0, row.label)
        summary = row.table_aggregate(tasks)
        return (2, -(summary["mean"] if summary else -np.inf), row.label)

    return sorted(rows, key=key)
