"""Write a leaderboard: Markdown, CSV, JSON, plots (PNG + SVG) and one self-contained HTML page.

Every output is a deterministic function of the `Leaderboard`: numbers are formatted with fixed precision,
rows have a fixed order, plots carry no dates and a fixed SVG hash salt, and no wall-clock time is written.
All text that comes from result files is escaped: HTML in the page; in Markdown, HTML characters, link
brackets and table separators (Markdown passes raw HTML and links through); in CSV, a leading formula
character.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from leaderboard.aggregate import METRIC_NAMES, METRICS, Interval
from leaderboard.board import KIND_NAMES, Leaderboard, Row

PLOTS = ("aggregates", "profiles", "improvement", "curves")
SVG_SALT = "mbrl-bench-leaderboard"


# ------------------------------------------------------------------------------------------ numbers


def _num(value: float | None, digits: int = 6):
    """JSON number with `digits` significant digits (stable text, no float noise)."""
    if value is None:
        return None
    return float(f"{value:.{digits}g}")


def _fmt(value: float | None, decimals: int = 3) -> str:
    return "—" if value is None else f"{value:.{decimals}f}"


def _fmt_interval(interval: Interval | None, decimals: int = 3) -> str:
    if interval is None:
        return "—"
    return f"{interval.point:.{decimals}f} [{interval.low:.{decimals}f}, {interval.high:.{decimals}f}]"


def _raw_decimals(board: Leaderboard) -> int:
    return 1 if board.suite.scoring.normaliser == "human" else 3


def _runs_text(row: Row, tasks: Sequence[str]) -> str:
    if row.method.kind == "table":
        return "table"
    low, high = row.runs_range(tasks)
    return f"{low}" if low == high else f"{low}–{high}"


# ------------------------------------------------------------------------------------------ tables


def aggregate_table(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    header = ["#", "Method", "Kind", "Protocol", "Runs per task", *[METRIC_NAMES[m] for m in METRICS]]
    rows, rank = [], 0
    for row in board.rows:
        if row.in_aggregate:
            rank += 1
            cells = [_fmt_interval(row.stats.metrics.get(m)) for m in METRICS]
            position = str(rank)
        elif row.method.kind == "table":
            summary = row.table_aggregate(board.tasks)
            cells = ["—", _fmt(summary and summary["median"]), _fmt(summary and summary["mean"]), "—"]
            position = "table-only"
        else:
            cells = ["—"] * len(METRICS)
            position = "excluded"
        rows.append([position, row.label, KIND_NAMES[row.method.kind], row.method.protocol,
                     _runs_text(row, board.tasks), *cells])  # fmt: skip
    return header, rows


def improvement_table(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    header = ["X", "Y", "Tasks", "P(X > Y) [95% CI]"]
    return header, [[i.x, i.y, str(i.tasks), _fmt_interval(i.probability)] for i in board.improvements]


def per_task_table(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    header = ["Task", *[row.label for row in board.rows]]
    body = []
    for task in board.suite.tasks:
        has_scores = any(row.normalised.get(task) or row.table_means.get(task) is not None for row in board.rows)
        if task not in board.tasks and not has_scores:
            continue  # neither selected nor scored by any row: nothing to show
        cells = [task if task in board.tasks else f"{task} (not aggregated)"]
        for row in board.rows:
            if row.method.kind == "table":
                mean_std = row.table_means.get(task)
                if mean_std is None:
                    cells.append("—")
                else:
                    std = "" if mean_std[1] is None else f" ± {mean_std[1]:.3f}"
                    cells.append(f"{mean_std[0]:.3f}{std} (table)")
                continue
            values = row.normalised.get(task)
            cells.append("—" if not values else f"{np.mean(values):.3f} ({len(values)})")
        body.append(cells)
    return header, body


def methods_table(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    header = ["Method", "Kind", "Protocol", "How the final score is computed", "Source", "Wall time per run",
              "Notes"]  # fmt: skip
    body = []
    for row in board.rows:
        method = row.method
        notes = [text for text in (method.note, row.why_not) if text]
        if row.in_aggregate and row.stats is not None:
            low, high = row.runs_range(board.tasks)
            if low != high:
                notes.append(f"ragged: {low}–{high} runs per task, every task weighted equally")
            if high == 1:
                notes.append("one run per task: the bootstrap has nothing to resample, so its own intervals are "
                             "points")
        if method.excluded:
            notes.append(f"{len(method.excluded)} run(s) without a score under the protocol (see report)")
        if method.broken_episodes:
            notes.append(f"{method.broken_episodes} broken episode(s) excluded")
        if method.kind == "runs":
            notes.append(f"code: {', '.join(method.commits)}")
        body.append([row.label, KIND_NAMES[method.kind], method.protocol, method.protocol_detail, method.source,
                     wall_time_text(method), "; ".join(notes)])  # fmt: skip
    return header, body


WALL_TIME_NOTE = (
    "Wall time per run: median (range) of the process wall time each run's manifest records, a vmapped "
    "group's time split over its seeds, on the hardware named; it includes whatever else the machine ran at "
    "the time, so it compares costs between runs made alike, not across machines or loads."
)


def wall_time_summary(method) -> dict | None:
    """Median and range of the runs' process wall time (manifests' `wall_time`, a vmapped group's split over
    its seeds), where they ran; None for rows without run manifests."""
    if not method.cost_seconds:
        return None
    seconds = np.asarray(method.cost_seconds, dtype=np.float64)
    return {"median": float(np.median(seconds)), "min": float(seconds.min()), "max": float(seconds.max()),
            "runs": len(seconds), "hardware": list(method.hardware)}  # fmt: skip


def wall_time_text(method) -> str:
    """E.g. "13.1 min (10.2–16.0 over 15 runs; cpu, 2 threads)": the median first."""
    summary = wall_time_summary(method)
    if summary is None:
        return ""
    unit, scale = ("h", 3600.0) if summary["median"] >= 5400 else ("min", 60.0)
    low, high = summary["min"] / scale, summary["max"] / scale
    where = " / ".join(summary["hardware"])
    median = summary["median"] / scale
    return f"{median:.1f} {unit} ({low:.1f}–{high:.1f} over {summary['runs']} runs; {where})"


def report_lines(board: Leaderboard) -> list[str]:
    lines = [f"note: {note}" for note in board.report.notes]
    lines += [f"skipped run {folder}: {reason}" for folder, reason in board.report.skipped]
    for row in board.rows:
        lines += [f"{row.label}: left out {text}" for text in row.method.excluded]
        if row.curve is not None and row.curve.missing_points:
            lines.append(
                f"{row.label}: {row.curve.missing_points} curve point(s) left out (a task had no value)"
            )
    return lines


# ------------------------------------------------------------------------------------------ Markdown


_MD_ESCAPES = str.maketrans({
    "\\": "\\\\", "|": "\\|", "[": "\\[", "]": "\\]", "`": "\\`",  # no links, code spans or cell breaks
    "&": "&amp;", "<": "&lt;", ">": "&gt;",  # no raw HTML (Markdown passes it through) and no <scheme:...> links
    "\n": " ", "\r": " ",
})  # fmt: skip


def _md_cell(text: str) -> str:
    """Text from result files as inert Markdown: no HTML, no links, no table breaks."""
    return str(text).translate(_MD_ESCAPES)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_lines(board: Leaderboard, escape=str) -> list[str]:
    """The summary paragraph; `escape` makes the text from outside (the results roots) inert."""
    info = board.suite
    return [
        (
            f"Suite `{info.name}`: aggregates over {board.task_selection}; normalised score: "
            f"{board.normaliser} ({info.scoring.normalised_unit})."
        ),
        (
            f"Our runs are scored under `{info.protocol}`; each row states the protocol of its numbers, and "
            "rows under different protocols are not strictly comparable."
        ),
        (
            "Intervals: 95% percentile CIs of a stratified bootstrap (runs resampled within tasks), "
            f"{board.reps:,} replicates, seed {board.seed}. IQM and optimality gap pool all runs; median and "
            "mean are over per-task means (rliable's estimators). Table-only rows show published means and "
            "are not bootstrapped."
        ),
        f"Results roots: {escape(', '.join(board.roots)) or 'none'}.",
    ]


def markdown(board: Leaderboard) -> str:
    parts = [f"# Leaderboard: {board.suite.name}", "", *summary_lines(board, _md_cell), ""]
    parts += ["## Aggregate metrics", "", _md_table(*aggregate_table(board)), ""]
    if board.improvements:
        parts += ["## Probability of improvement", "", _md_table(*improvement_table(board)), ""]
    parts += [
        "## Per-task scores",
        "",
        "Mean normalised score (runs).",
        "",
        _md_table(*per_task_table(board)),
        "",
    ]
    parts += ["## Methods", "", _md_table(*methods_table(board)), "", WALL_TIME_NOTE, ""]
    lines = report_lines(board)
    parts += ["## Report", ""] + ([f"- {_md_cell(line)}" for line in lines] or ["Nothing skipped."]) + [""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------- JSON


def _interval_dict(interval: Interval) -> dict:
    return {"point": _num(interval.point), "low": _num(interval.low), "high": _num(interval.high)}


def to_dict(board: Leaderboard) -> dict:
    info = board.suite
    rows = []
    for row in board.rows:
        method = row.method
        entry = {
            "method": row.label,
            "kind": method.kind,
            "protocol": method.protocol,
            "protocol_detail": method.protocol_detail,
            "source": method.source,
            "note": method.note,
            "in_aggregate": row.in_aggregate,
            "why_not": row.why_not,
            "aggregates": (
                {m: _interval_dict(row.stats.metrics[m]) for m in METRICS if m in row.stats.metrics}
                if row.stats else None
            ),
            "table_aggregates": (
                {k: _num(v) for k, v in row.table_aggregate(board.tasks).items()}
                if method.kind == "table" and row.table_aggregate(board.tasks) else None
            ),
            "per_task": {
                task: {
                    "runs": len(values),
                    "raw": [_num(v) for v in method.raw[task]],
                    "normalised": [_num(v) for v in values],
                    "run_ids": method.run_ids.get(task, []),
                }
                for task, values in sorted(row.normalised.items())
            },
            "table": {
                task: {"mean": _num(mean), "std": _num(std)} for task, (mean, std) in sorted(row.table_means.items())
            },
            "excluded_runs": list(method.excluded),
            "broken_episodes": method.broken_episodes,
            "code": list(method.commits),
            "wall_time_per_run_s": wall_time_summary(method),
            "profile": (
                {"point": [_num(v) for v in row.stats.profile.point], "low": [_num(v) for v in row.stats.profile.low],
                 "high": [_num(v) for v in row.stats.profile.high]}
                if row.stats and row.stats.profile else None
            ),
            "curve": (
                {"frames": [_num(p.frames) for p in row.curve.points],
                 "iqm": [_interval_dict(p.iqm) for p in row.curve.points],
                 "runs": [p.runs for p in row.curve.points], "missing_points": row.curve.missing_points}
                if row.curve else None
            ),
        }  # fmt: skip
        rows.append(entry)
    return {
        "suite": info.name,
        "tasks": list(board.tasks),
        "task_selection": board.task_selection,
        "suite_tasks": list(info.tasks),
        "protocol": info.protocol,
        "normaliser": board.normaliser,
        "score_unit": info.scoring.score_unit,
        "normalised_unit": info.scoring.normalised_unit,
        "confidence": 0.95,
        "reps": board.reps,
        "seed": board.seed,
        "roots": list(board.roots),
        "profile_taus": [_num(t) for t in board.taus],
        "rows": rows,
        "probability_of_improvement": [
            {"x": i.x, "y": i.y, "tasks": i.tasks, **_interval_dict(i.probability)}
            for i in board.improvements
        ],
        "report": {
            "notes": list(board.report.notes),
            "skipped_runs": [{"folder": f, "reason": r} for f, r in board.report.skipped],
        },
    }


# ------------------------------------------------------------------------------------------------ CSV


def _csv_cell(value):
    """A text cell that a spreadsheet would run as a formula (= + - @, tab, CR first) gets a leading quote."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_text(header: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_csv_cell(value) for value in row] for row in rows)
    return buffer.getvalue()


def csv_files(board: Leaderboard) -> dict[str, str]:
    aggregates = []
    for row in board.rows:
        low, high = row.runs_range(board.tasks)
        values = []
        for metric in METRICS:
            interval = row.stats.metrics.get(metric) if row.stats else None
            values += (
                [_num(interval.point), _num(interval.low), _num(interval.high)] if interval else ["", "", ""]
            )
        aggregates.append(
            [row.label, row.method.kind, row.method.protocol, int(row.in_aggregate), low, high, *values]
        )
    header = ["method", "kind", "protocol", "in_aggregate", "runs_min", "runs_max"]
    header += [f"{m}{suffix}" for m in METRICS for suffix in ("", "_low", "_high")]
    per_task = []
    for row in board.rows:
        for task in board.suite.tasks:
            if task in row.normalised:
                normalised = row.normalised[task]
                per_task.append([row.label, task, len(normalised), _num(float(np.mean(row.method.raw[task]))),
                                 _num(float(np.mean(normalised))), "", ""])  # fmt: skip
            elif task in row.table_means:
                mean, std = row.table_means[task]
                per_task.append([row.label, task, "", "", "", _num(mean), "" if std is None else _num(std)])
    improvement = [[i.x, i.y, i.tasks, _num(i.probability.point), _num(i.probability.low), _num(i.probability.high)]
                   for i in board.improvements]  # fmt: skip
    profiles = []
    curves = []
    for row in board.rows:
        if row.stats and row.stats.profile:
            profile = row.stats.profile
            profiles += [[row.label, _num(t), _num(p), _num(lo), _num(hi)]
                         for t, p, lo, hi in zip(profile.taus, profile.point, profile.low, profile.high)]  # fmt: skip
        if row.curve:
            curves += [[row.label, _num(p.frames), p.runs, _num(p.iqm.point), _num(p.iqm.low), _num(p.iqm.high)]
                       for p in row.curve.points]  # fmt: skip
    return {
        "aggregates.csv": _csv_text(header, aggregates),
        "per_task.csv": _csv_text(
            ["method", "task", "runs", "raw_mean", "normalised_mean", "table_mean", "table_std"], per_task
        ),
        "improvement.csv": _csv_text(["x", "y", "tasks", "probability", "low", "high"], improvement),
        "profiles.csv": _csv_text(["method", "tau", "fraction_above", "low", "high"], profiles),
        "curves.csv": _csv_text(["method", "env_frames", "runs", "iqm", "iqm_low", "iqm_high"], curves),
    }


# ---------------------------------------------------------------------------------------------- plots


def _colours(labels: Sequence[str]) -> dict[str, tuple]:
    palette = matplotlib.colormaps["tab20"].colors
    return {label: palette[(2 * i) % 20 + (i // 10) % 2] for i, label in enumerate(labels)}


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def plot_aggregates(board: Leaderboard) -> Figure | None:
    rows = [row for row in board.rows if row.in_aggregate]
    if not rows:
        return None
    colours = _colours([row.label for row in board.rows])
    metrics = [m for m in METRICS if m in rows[0].stats.metrics]
    figure = _figure(3.25 * len(metrics), 1.2 + 0.35 * len(rows))
    axes = figure.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    for axis, metric in zip(axes, metrics):
        for index, row in enumerate(rows):
            interval = row.stats.metrics[metric]
            axis.barh(index, interval.high - interval.low, left=interval.low, height=0.6,
                      color=colours[row.label], alpha=0.75)  # fmt: skip
            axis.plot(
                [interval.point, interval.point], [index - 0.3, index + 0.3], color="black", linewidth=1.5
            )
        axis.set_title(METRIC_NAMES[metric] + (" (lower is better)" if metric == "optimality_gap" else ""))
        axis.set_xlabel(board.suite.scoring.normalised_unit)
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), [row.label for row in rows])
    axes[0].invert_yaxis()
    return figure


def plot_profiles(board: Leaderboard) -> Figure | None:
    rows = [row for row in board.rows if row.stats and row.stats.profile]
    if not rows:
        return None
    colours = _colours([row.label for row in board.rows])
    figure = _figure(10, 5.5)
    axis = figure.subplots()
    for row in rows:
        profile = row.stats.profile
        axis.plot(profile.taus, profile.point, color=colours[row.label], label=row.label, linewidth=1.5)
        axis.fill_between(profile.taus, profile.low, profile.high, color=colours[row.label], alpha=0.15)
    axis.set_xlabel(f"{board.suite.scoring.normalised_unit} (τ)")
    axis.set_ylabel("fraction of runs with score > τ")
    axis.set_title("Performance profiles (95% CIs)")
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return figure


def plot_improvement(board: Leaderboard) -> Figure | None:
    if not board.improvements:
        return None
    figure = _figure(8, 1.2 + 0.35 * len(board.improvements))
    axis = figure.subplots()
    for index, item in enumerate(board.improvements):
        p = item.probability
        axis.barh(index, p.high - p.low, left=p.low, height=0.6, color="tab:blue", alpha=0.6)
        axis.plot([p.point, p.point], [index - 0.3, index + 0.3], color="black", linewidth=1.5)
    axis.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    axis.set_yticks(range(len(board.improvements)), [f"P({i.x} > {i.y})" for i in board.improvements])
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel("probability of improvement (95% CI)")
    axis.grid(axis="x", alpha=0.3)
    return figure


def plot_curves(board: Leaderboard) -> Figure | None:
    rows = [row for row in board.rows if row.curve and row.curve.points]
    if not rows:
        return None
    colours = _colours([row.label for row in board.rows])
    figure = _figure(10, 5.5)
    axis = figure.subplots()
    for row in rows:
        frames = [p.frames for p in row.curve.points]
        axis.plot(frames, [p.iqm.point for p in row.curve.points], marker="o", markersize=3,
                  color=colours[row.label], label=row.label)  # fmt: skip
        axis.fill_between(frames, [p.iqm.low for p in row.curve.points], [p.iqm.high for p in row.curve.points],
                          color=colours[row.label], alpha=0.15)  # fmt: skip
    axis.set_xlabel("env frames")
    axis.set_ylabel(f"IQM {board.suite.scoring.normalised_unit}")
    axis.set_title("Sample efficiency (IQM, 95% CIs)")
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return figure


def figure_bytes(figure: Figure, kind: str) -> bytes:
    """PNG or SVG bytes without dates or version stamps (SVG ids from a fixed salt)."""
    buffer = io.BytesIO()
    if kind == "svg":
        with matplotlib.rc_context({"svg.hashsalt": SVG_SALT, "svg.fonttype": "path"}):
            figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    else:
        figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def figures(board: Leaderboard) -> dict[str, Figure]:
    made = {
        "aggregates": plot_aggregates(board),
        "profiles": plot_profiles(board),
        "improvement": plot_improvement(board),
        "curves": plot_curves(board),
    }
    return {name: figure for name, figure in made.items() if figure is not None}


# ----------------------------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.scroll { overflow-x: auto; }
#aggregate td, #improvement td, #per-task td { white-space: nowrap; }
"""


def _html_table(header: list[str], rows: list[list[str]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _inline_code(escaped: str) -> str:
    """`name` -> <code>name</code> in already escaped text."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def html_page(board: Leaderboard, svgs: dict[str, bytes]) -> str:
    title = f"Leaderboard: {board.suite.name}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]  # fmt: skip
    parts += [f"<p>{_inline_code(html.escape(line))}</p>" for line in summary_lines(board)]
    parts += ["<h2>Aggregate metrics</h2>", _html_table(*aggregate_table(board), "aggregate")]
    captions = {
        "aggregates": "Aggregate metrics with 95% CIs",
        "profiles": "Performance profiles",
        "improvement": "Probability of improvement",
        "curves": "Sample-efficiency curves",
    }
    for name in PLOTS:
        if name == "improvement" and board.improvements:
            parts += [
                "<h2>Probability of improvement</h2>",
                _html_table(*improvement_table(board), "improvement"),
            ]
        if name in svgs:
            data = base64.b64encode(svgs[name]).decode("ascii")
            parts += [f"<h3>{html.escape(captions[name])}</h3>",
                      f'<img id="plot-{name}" alt="{html.escape(captions[name])}" src="data:image/svg+xml;base64,{data}">']  # fmt: skip
    parts += ["<h2>Per-task scores</h2>", "<p>Mean normalised score (runs).</p>",
              _html_table(*per_task_table(board), "per-task")]  # fmt: skip
    parts += ["<h2>Methods</h2>", _html_table(*methods_table(board), "methods"),
              f"<p>{html.escape(WALL_TIME_NOTE)}</p>"]  # fmt: skip
    lines = report_lines(board)
    parts += ["<h2>Report</h2>", "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"
              if lines else "<p>Nothing skipped.</p>"]  # fmt: skip
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------- write


def write(board: Leaderboard, out: Path, *, plots: bool = True) -> list[Path]:
    """Write every output into `out`; returns the files written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def put(name: str, data: bytes | str) -> None:
        path = out / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        written.append(path)

    put("leaderboard.md", markdown(board))
    put("leaderboard.json", json.dumps(to_dict(board), indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    for name, text in csv_files(board).items():
        put(name, text)
    svgs = {}
    if plots:
        for name, figure in figures(board).items():
            svgs[name] = figure_bytes(figure, "svg")
            put(f"{name}.svg", svgs[name])
            put(f"{name}.png", figure_bytes(figure, "png"))
    put("index.html", html_page(board, svgs))
    # plots of an earlier build that this one has no data for would look current: remove them (and the
    # earlier screenshot); only these generated names are ever removed
    stale = {f"{name}.{kind}" for name in PLOTS for kind in ("png", "svg")} | {"screenshot.png"}
    for name in sorted(stale - {path.name for path in written}):
        (out / name).unlink(missing_ok=True)
    return written
