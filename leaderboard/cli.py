"""Command-line entry points: `bench leaderboard` and `bench publish` (also `python -m leaderboard ...`).

    bench leaderboard --suite atari100k [--runs DIR ...] [--out DIR] [--reps N] [--seed N]
    bench publish RUN_DIR [RUN_DIR ...] [--to RESULTS_DIR]

User errors raise ValueError/KeyError with a one-line message; `main` (and bench.cli) print them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from leaderboard.normalize import PROTOCOLS, SUITES


def add_leaderboard_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", help=f"suite to rank ({', '.join(sorted(SUITES))}); required unless --plan")
    parser.add_argument("--plan", type=Path,
                        help="board of exactly a benchmark plan's runs (its suite; says which are missing)")  # fmt: skip
    parser.add_argument("--runs", nargs="+", type=Path, metavar="DIR",
                        help="results roots holding <suite>/<task>/<agent>/<config-hash>/seed<N>/ run folders "
                             "(default: the repository's results/ and the local runs/ or $BENCH_ROOT)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="output folder (default: leaderboard_out/<suite>)")
    parser.add_argument("--reps", type=int, default=50_000, help="bootstrap replicates (default 50000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--protocol", choices=PROTOCOLS,
                        help="evaluation protocol our runs are scored under (default: the suite's)")  # fmt: skip
    parser.add_argument("--tasks", nargs="+", metavar="TASK",
                        help="tasks to aggregate over: 'all' (default), 'common' (those every method has) "
                             "or task names")  # fmt: skip
    parser.add_argument("--methods", nargs="+", metavar="LABEL", help="only these rows (labels as shown)")
    parser.add_argument("--no-references", action="store_true", help="leave out the published reference rows")
    parser.add_argument("--compare", nargs=2, action="append", metavar=("X", "Y"),
                        help="probability of improvement of X over Y (repeatable; default: our methods against "
                             "every other row, or the best row against the others)")  # fmt: skip
    parser.add_argument("--curve-points", type=int, default=10, help="points on the sample-efficiency curves")
    parser.add_argument("--any-budget", action="store_true",
                        help="include runs whose step budget differs from the suite's")  # fmt: skip
    parser.add_argument("--skip-invalid", action="store_true",
                        help="report malformed run folders and go on instead of stopping")  # fmt: skip
    parser.add_argument("--no-plots", action="store_true", help="write tables only")
    parser.add_argument("--screenshot", action="store_true",
                        help="also save screenshot.png of the HTML page (needs Chromium)")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def _progress_factory(console, stack):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = stack.enter_context(
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
    )

    def factory(description: str, total: int):
        task = progress.add_task(description, total=max(total, 1))
        if total == 0:
            progress.update(task, completed=1)
        return lambda amount: progress.advance(task, amount)

    return factory


def run_leaderboard(args: argparse.Namespace) -> int:
    import contextlib

    from rich.console import Console

    from leaderboard import board as board_lib
    from leaderboard import render

    console = Console(stderr=True)
    quiet = getattr(args, "quiet", False)
    plan = None
    if getattr(args, "plan", None):
        from bench import plan as plan_lib

        plan = plan_lib.load(args.plan)
        if args.suite and args.suite != plan.suite:
            raise ValueError(f"--suite {args.suite!r} differs from the plan's suite {plan.suite!r}")
        args.suite = plan.suite
    if not args.suite:
        raise ValueError("bench leaderboard: --suite is required (or give --plan FILE)")
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        factory = None if quiet else _progress_factory(console, stack)
        board = board_lib.build(
            args.suite,
            roots=args.runs,
            protocol=args.protocol,
            reps=args.reps,
            seed=args.seed,
            tasks=args.tasks,
            methods=args.methods,
            references=not args.no_references,
            compare=[tuple(pair) for pair in args.compare] if args.compare else None,
            curve_points=args.curve_points,
            any_budget=args.any_budget,
            skip_invalid=args.skip_invalid,
            progress=factory,
            plan=plan,
        )
    built = time.perf_counter()
    out = args.out or Path("leaderboard_out") / (plan.name if plan else board.suite.name)
    written = render.write(board, out, plots=not args.no_plots)
    if args.screenshot:
        from leaderboard import browser

        written.append(browser.screenshot(out / "index.html", out / "screenshot.png"))
    finished = time.perf_counter()
    if not quiet:
        _print_summary(board, console)
        console.print(f"wrote {len(written)} files to {out}/", markup=False)
        console.print(f"HTML page: {out / 'index.html'}", markup=False, soft_wrap=True)
        plots = [str(path) for path in written if path.suffix == ".png" and path.name != "screenshot.png"]
        if plots:
            console.print(f"plots: {' '.join(plots)}", markup=False, soft_wrap=True)
        console.print(f"time: {built - started:.1f} s loading + bootstrap, {finished - built:.1f} s writing")
    return 0


def _print_summary(board, console) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=f"{board.suite.name}: IQM over {len(board.tasks)} tasks ({board.reps:,} bootstrap reps)"
    )
    for column in ("#", "method", "protocol", "runs/task", "IQM [95% CI]"):
        table.add_column(column)
    rank = 0
    for row in board.rows:
        if not row.in_aggregate:
            continue
        rank += 1
        low, high = row.runs_range(board.tasks)
        iqm = row.stats.metrics["iqm"]
        cells = (str(rank), row.label, row.method.protocol, str(low) if low == high else f"{low}-{high}",
                 f"{iqm.point:.3f} [{iqm.low:.3f}, {iqm.high:.3f}]")  # fmt: skip
        table.add_row(*(Text(cell) for cell in cells))  # Text: labels are data, not rich markup
    console.print(table)
    left_out = [row for row in board.rows if not row.in_aggregate]
    if left_out:
        console.print(f"{len(left_out)} row(s) not in the aggregate (see the Methods table)", markup=False)
    if board.report.skipped:
        console.print(
            f"{len(board.report.skipped)} run folder(s) skipped (see the Report section)", markup=False
        )


def add_publish_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="finished run folders, or folders holding runs (their unfinished runs are "
                             "left out)")  # fmt: skip
    parser.add_argument("--to", type=Path, help="results folder (default: the repository's results/)")
    parser.add_argument("--force", action="store_true", help="replace a different published copy of a run")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="publish runs made from a checkout with uncommitted changes that their folder does "
                             "not keep (newer runs keep them as code-*.diff and need no flag)")  # fmt: skip
    parser.add_argument("--any-budget", action="store_true",
                        help="publish runs whose step budget differs from the suite's")  # fmt: skip


def run_publish(args: argparse.Namespace) -> int:
    from leaderboard import publish

    results = args.to or publish.repository_results()
    folders, unfinished = publish.expand_run_folders(args.run_dirs)
    for folder in unfinished:
        print(f"not finished, left out: {folder}")
    # validate every run before copying any, so one bad run leaves results/ untouched
    plans = [publish.plan(folder, results, force=args.force, allow_dirty=args.allow_dirty,
                          any_budget=args.any_budget) for folder in folders]  # fmt: skip
    targets = [p.target for p in plans]
    if len(set(targets)) != len(targets):
        raise ValueError("two of the given run folders are copies of the same run")
    for publication in plans:
        publish.write(publication)
        patches = sorted(name for name in publication.files if name.startswith("code-"))
        kept = f" (with the uncommitted changes it ran with: {', '.join(patches)})" if patches else ""
        print(f"{publication.status}: {publication.source} -> {publication.target}{kept}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_leaderboard_arguments(commands.add_parser("leaderboard", help="build a leaderboard"))
    add_publish_arguments(commands.add_parser("publish", help="publish finished runs into results/"))
    args = parser.parse_args(argv)
    handler = run_leaderboard if args.command == "leaderboard" else run_publish
    try:
        return handler(args)
    except (ValueError, KeyError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
