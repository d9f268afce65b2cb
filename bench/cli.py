"""The `bench` command line: run, list, leaderboard, publish, verify, perf, plot."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import textwrap
from pathlib import Path

from bench import compile_cache, stop_signals
from bench.sweep import PARENT_ENV, die_with_parent

RUN_EXAMPLES = """\
examples:
  bench run --agent dreamerv3 --suite toy --task reach --configs debug --steps 5000
  bench run --agent thick --suite atari100k --task pong --seed 1
  bench run --agent thick --suite atari100k --seeds 0:5 --parallel 2      (every task, seeds 0-4)
  bench run --agent thick --suite atari100k --seeds 0:5 --executor ray --ray.address HEAD_IP:6379
  bench run --agent dreamerv3 --suite toy --task reach --configs debug quick --seeds 0:5 --vmap
  bench run --agent dreamerv3 --suite dmc_proprio --task cartpole_swingup --loss_scales.rep 0.2 --run.envs 4
  bench run --plan plans/cpu.yaml --parallel 2      (every run of a benchmark plan; see bench/plan.py)

Any config key can be set with a dotted flag: agent keys directly (--loss_scales.sparse 10), framework
sections with their prefix (--run.train_ratio 64, --replay.capacity 1e5, --env.noops 0,
--logger.outputs jsonl,terminal,tensorboard). Running the same command again resumes an unfinished run
and skips a finished one. Runs go to --logdir (default $BENCH_ROOT or ./runs), one folder per
suite/task/agent/config-hash/seed.
"""

AGENT_HELP = "registered agent name, or package.module:SPEC (imports that module, running its code: name only code you trust)"
SUITE_HELP = "registered suite name, or package.module:SUITE (imports that module and runs its code, like --agent)"


def _add_run(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="train and evaluate an agent on a task (or every task of a suite)",
        description="Train and evaluate an agent; resume unfinished runs; skip finished ones.",
        epilog=RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--agent", help=AGENT_HELP + " (required unless --plan)")
    parser.add_argument("--suite", help=SUITE_HELP + " (required unless --plan)")
    parser.add_argument("--plan", help="run every run of a benchmark plan (a YAML file; see bench/plan.py)")
    parser.add_argument("--task", help="task of the suite; without it every task of the suite is run")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="one seed (default 0)")
    seeds.add_argument("--seeds", help="several seeds: A:B (B excluded) or a comma list")
    parser.add_argument("--configs", nargs="+", default=[], metavar="PRESET", help="agent presets, applied in order")
    parser.add_argument("--logdir", help="results root (default $BENCH_ROOT or ./runs)")
    parser.add_argument("--steps", type=float, help="agent steps (overrides the suite budget; same as --run.steps)")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time in a sweep (local executor)")
    parser.add_argument("--executor", default="local", choices=["local", "ray"],
                        help="sweep executor: a local process pool, or a Ray cluster (see --ray.*)")
    ray = parser.add_argument_group("Ray executor (--executor ray)")
    ray.add_argument("--ray.address", dest="ray_address", metavar="ADDRESS",
                     help="cluster address, e.g. 10.0.0.1:6379 or auto (the one `ray start` began on this machine); "
                     "default $RAY_ADDRESS, else a new cluster on this machine")
    ray.add_argument("--ray.cpus", dest="ray_cpus", type=float, metavar="N", help="CPUs each run holds (default 1)")
    ray.add_argument("--ray.gpus", dest="ray_gpus", type=float, metavar="N", help="GPUs each run holds (default 0)")
    ray.add_argument("--ray.retries", dest="ray_retries", type=int, metavar="N",
                     help="times a failed or lost run is started again; it resumes from its checkpoint (default 2)")
    parser.add_argument("--vmap", action="store_true",
                        help="run the seeds of each task in one process, their agents stacked and vmapped "
                        "(bench/vmap_run.py); folders and files as separate runs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    parser.add_argument("--restart", action="store_true",
                        help="start over a run folder whose results cannot be resumed (deletes its results)")


def _cmd_run(args, extra: list[str]) -> int:
    from bench import config as config_lib
    from bench import registry, results, runner
    from bench.sweep import Job, check_seeds, parse_seeds, summarize

    if args.plan:
        return _run_plan(args, extra)
    if not args.agent or not args.suite:
        raise config_lib.ConfigError("bench run: --agent and --suite are required (or give --plan FILE)")
    overrides = config_lib.parse_overrides(extra)
    if args.steps is not None:
        if not float(args.steps).is_integer() or args.steps <= 0:
            raise config_lib.ConfigError(f"--steps: expected a positive whole number, got {args.steps}")
        overrides["run.steps"] = str(int(args.steps))
    executor = _executor(args)
    seeds = parse_seeds(args.seeds) if args.seeds else check_seeds([args.seed or 0], "--seed")
    suite = registry.get_suite(args.suite)
    tasks = [suite.resolve_task(args.task)] if args.task else list(suite.tasks)
    # resolve the config once, up front, so a typo fails before any run starts
    resolved = runner.resolve(args.agent, args.suite, tasks[0], args.configs, overrides)
    command = shlex.join(["bench", *sys.argv[1:]])
    if args.vmap and len(seeds) < 2:
        raise config_lib.ConfigError("--vmap stacks several seeds in one process: give --seeds (e.g. --seeds 0:5)")
    if args.vmap and len(tasks) == 1:
        return _run_vmapped(args, resolved, seeds, command)
    if len(tasks) == 1 and len(seeds) == 1 and args.executor == "local":
        root = args.logdir or results.default_root()
        target = runner.run_folder(resolved, seeds[0], root)
        try:
            with results.no_new_empty_folders(target):
                folder = runner.run(resolved, seed=seeds[0], root=root, quiet=args.quiet, command=command,
                                    restart=args.restart)  # fmt: skip
        except runner.RunStopped as stopped:
            print(f"bench: {stopped}", file=sys.stderr)
            return 130
        if not args.quiet:
            print(folder)
        return 0
    logdir = _sweep_logdir(args)
    if args.vmap:  # one job per task: its seeds in one process
        jobs = [Job(args.agent, args.suite, task, seeds[0], tuple(args.configs), tuple(overrides.items()), logdir,
                    vmap_seeds=tuple(seeds)) for task in tasks]  # fmt: skip
    else:
        jobs = [
            Job(args.agent, args.suite, task, seed, tuple(args.configs), tuple(overrides.items()), logdir)
            for task in tasks
            for seed in seeds
        ]
    where = "on Ray" if args.executor == "ray" else f"{args.parallel} at a time"
    what = f"{len(tasks)} tasks x {len(seeds)} seeds" + (", the seeds of a task vmapped in one process" if args.vmap else "")
    print(f"sweep: {len(jobs)} runs ({what}), {where}", file=sys.stderr)
    return summarize(jobs, executor.run_all(jobs))


def _executor(args):
    """The sweep executor the flags ask for (checked before anything runs)."""
    from bench import config as config_lib
    from bench.sweep import EXECUTORS

    if args.parallel < 1:
        raise config_lib.ConfigError(f"--parallel: expected a positive number of runs at a time, got {args.parallel}")
    ray_options = {key: value for key in ("address", "cpus", "gpus", "retries")
                   if (value := getattr(args, f"ray_{key}")) is not None}  # fmt: skip
    if ray_options and args.executor != "ray":
        raise config_lib.ConfigError(f"--ray.{next(iter(ray_options))} is an option of --executor ray")
    if args.vmap and args.executor == "ray":
        raise config_lib.ConfigError("--vmap runs a task's seeds in one local process; it does not combine with "
                                     "--executor ray (give each Ray run its seeds: one --seed per run)")  # fmt: skip
    if args.executor == "ray" and args.parallel != 1:
        raise config_lib.ConfigError("--parallel is for the local executor; on Ray, --ray.cpus and --ray.gpus per run "
                                     "decide how many runs share the cluster")  # fmt: skip
    return EXECUTORS["ray"](**ray_options) if args.executor == "ray" else EXECUTORS["local"](args.parallel)


def _run_vmapped(args, resolved, seeds: list[int], command: str) -> int:
    """One task's seeds in this process (bench/vmap_run.py); a seed that failed is named, the others go on."""
    from bench import results, runner, vmap_run

    root = args.logdir or results.default_root()
    try:
        with contextlib.ExitStack() as folders:
            for seed in seeds:
                folders.enter_context(results.no_new_empty_folders(runner.run_folder(resolved, seed, root)))
            outcome = vmap_run.run_group(resolved, seeds, root=root, quiet=args.quiet, command=command,
                                         restart=args.restart)  # fmt: skip
    except runner.RunStopped as stopped:
        print(f"bench: {stopped}", file=sys.stderr)
        return 130
    failed = {seed: error for seed, error in outcome.items() if isinstance(error, str)}
    for seed, error in failed.items():
        print(f"bench: error: seed {seed}: {error.splitlines()[0]}", file=sys.stderr)
    if not args.quiet:
        print("\n".join(str(folder) for folder in outcome.values() if not isinstance(folder, str)))
    return 1 if failed else 0


def _sweep_logdir(args) -> str | None:
    from bench import results

    if args.executor == "ray":  # a Ray worker starts elsewhere: every node sees the results root at this path
        return str((Path(args.logdir) if args.logdir else results.default_root()).resolve())
    return args.logdir


def _run_plan(args, extra: list[str]) -> int:
    """`bench run --plan FILE`: the plan's unfinished runs as one sweep (finished ones are counted, not rerun)."""
    from bench import config as config_lib
    from bench import plan as plan_lib
    from bench import results
    from bench.sweep import Job, group_for_vmap, summarize

    given = [flag for flag, value in (("--agent", args.agent), ("--suite", args.suite), ("--task", args.task),
             ("--seed", args.seed), ("--seeds", args.seeds), ("--configs", args.configs), ("--steps", args.steps),
             ("--restart", args.restart)) if value]  # fmt: skip
    if given or extra:
        raise config_lib.ConfigError(f"--plan: the plan file says what to run; drop {' '.join(given + extra)}")
    executor = _executor(args)
    plan = plan_lib.load(args.plan)
    runs = plan_lib.resolve_runs(plan)
    left_out = plan.runs()[1]
    root = args.logdir or results.default_root()
    todo = [run for run in runs if not results.is_finished(run.folder(plan.suite, root))]
    where = "on Ray" if args.executor == "ray" else f"{args.parallel} at a time"
    print(f"{plan.describe()}: {len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} to run "
          f"({where}) under {root}", file=sys.stderr)  # fmt: skip
    for line in left_out:
        print(f"  left out: {line}", file=sys.stderr)
    logdir = _sweep_logdir(args)
    jobs = [Job(run.run.agent.agent, plan.suite, run.run.task, run.run.seed, run.run.agent.configs,
                run.run.overrides, logdir) for run in todo]  # fmt: skip
    if args.vmap:
        jobs = group_for_vmap(jobs)
    if not jobs:
        return 0
    return summarize(jobs, executor.run_all(jobs))


def _add_list(subparsers) -> None:
    parser = subparsers.add_parser(
        "list",
        help="list agents, suites, tasks and presets",
        description="List what the registry holds.",
        epilog="examples:\n  bench list\n  bench list tasks\n  bench list presets",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("what", nargs="?", default="all", choices=["all", "agents", "suites", "tasks", "presets"])


def _cmd_list(args, extra) -> int:
    from bench import registry

    def load(getter, name):
        try:
            return getter(name), None
        except Exception as error:  # noqa: BLE001 - listing must show every entry, broken ones too
            return None, str(error).splitlines()[0]

    out = []
    if args.what in ("all", "agents", "presets"):
        out.append("agents:")
        for name in registry.agent_names():
            spec, error = load(registry.get_agent, name)
            if error:
                out.append(f"  {name:14s} (failed to load: {error})")
                continue
            out.append(f"  {name:14s} {registry.describe_spec(spec)}")
            if args.what in ("all", "presets"):
                try:
                    presets = sorted(registry.agent_presets(spec))
                except Exception as error:  # noqa: BLE001
                    presets = [f"(failed to load presets: {error})"]
                if presets:
                    out.extend(textwrap.wrap(" ".join(presets), 100, initial_indent=" " * 17 + "presets: ",
                                             subsequent_indent=" " * 26))  # fmt: skip
    if args.what in ("all", "suites", "tasks"):
        out.append("suites:")
        for name in registry.suite_names():
            spec, error = load(registry.get_suite, name)
            if error:
                out.append(f"  {name:14s} (failed to load: {error})")
                continue
            out.append(f"  {name:14s} {len(spec.tasks)} tasks, budget {spec.budget} agent steps, "
                       f"score {spec.eval_protocol}. {registry.describe_spec(spec)}")  # fmt: skip
            if args.what in ("all", "tasks"):
                out.extend(textwrap.wrap(" ".join(spec.tasks), 100, initial_indent=" " * 17 + "tasks: ",
                                         subsequent_indent=" " * 24))  # fmt: skip
    print("\n".join(out))
    return 0


def _add_leaderboard(subparsers) -> None:
    try:
        from leaderboard import cli as leaderboard_cli
    except ImportError as error:
        leaderboard_cli = None
        missing = str(error)
    lb = subparsers.add_parser(
        "leaderboard",
        help="build a suite's leaderboard from result files and published reference rows",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Normalised scores, rliable aggregates with bootstrap CIs, Markdown/CSV/JSON/HTML and plots.",
        epilog="examples:\n  bench leaderboard --suite atari100k\n  bench leaderboard --plan plans/cpu.yaml --runs results\n"
        "  bench leaderboard --suite toy --runs runs --out leaderboard_out/toy --reps 2000",
    )
    pub = subparsers.add_parser(
        "publish",
        help="copy a finished run's result files into the repository's results/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Copy config, manifest, scores and metrics (no checkpoints, no replay) into results/.",
    )
    if leaderboard_cli is None:
        for parser in (lb, pub):
            parser.set_defaults(unavailable=missing)
        return
    leaderboard_cli.add_leaderboard_arguments(lb)
    leaderboard_cli.add_publish_arguments(pub)


def _cmd_leaderboard(args, extra) -> int:
    from leaderboard import cli as leaderboard_cli

    return leaderboard_cli.run_leaderboard(args)


def _cmd_publish(args, extra) -> int:
    from leaderboard import cli as leaderboard_cli

    return leaderboard_cli.run_publish(args)


def _add_verify(subparsers) -> None:
    from bench import verify

    parser = subparsers.add_parser(
        "verify",
        help="rerun a finished run from its own config and compare its episode scores",
        description="Rebuild a finished run from its folder (manifest.json, config.yaml), train it again into a "
        "scratch folder and compare the scores record by record: how to check a published result.",
        epilog=verify.EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_arguments(parser)


def _cmd_verify(args, extra) -> int:
    from bench import verify

    return verify.run(args)


def _add_perf(subparsers) -> None:
    from bench import perf

    parser = subparsers.add_parser(
        "perf",
        help="throughput benchmarks: runner, envs, agent",
        description="Throughput benchmarks that print figures and ratios.",
        epilog="examples:\n  bench perf runner --suite toy --task reach --envs 4\n  bench perf envs --suite atari100k"
        "\n  bench perf agent --agent dreamerv3 --configs size12m"
        "\n  bench perf agent --agent dreamerv3 --estimate atari100k      (wall time of one run and of the board)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    perf.add_arguments(parser)


def _cmd_perf(args, extra) -> int:
    from bench import perf

    return perf.run(args)


def _add_plot(subparsers) -> None:
    from bench import plot

    parser = subparsers.add_parser(
        "plot",
        help="learning curves of runs, side by side",
        description="Plot training-episode scores (moving average), evaluation rounds and chosen metrics of "
        "one or more run folders.",
        epilog="examples:\n  bench plot runs/toy/reach --out reach.png\n"
        "  bench plot runs/minihack/keycorridor4 --field success --metrics context/change_rate --out kc4.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plot.add_arguments(parser)


def _cmd_plot(args, extra) -> int:
    from bench import plot

    return plot.run(args)


COMMANDS = {
    "run": _cmd_run,
    "plot": _cmd_plot,
    "list": _cmd_list,
    "leaderboard": _cmd_leaderboard,
    "publish": _cmd_publish,
    "verify": _cmd_verify,
    "perf": _cmd_perf,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench",
        description="Benchmark suite for hierarchical and flat world-model agents.",
        epilog="Run `bench COMMAND --help` for each command's options and examples.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(subparsers)
    _add_list(subparsers)
    _add_leaderboard(subparsers)
    _add_verify(subparsers)
    _add_perf(subparsers)
    _add_plot(subparsers)
    return parser


def entry() -> int:
    """The `bench` console script: start again under TCMalloc where it is installed (bench/allocator.py), then
    run `main`."""
    from bench.allocator import restart_under_tcmalloc

    restart_under_tcmalloc(sys.argv[1:])
    stop_signals.hold()
    return main()


def main(argv: list[str] | None = None) -> int:
    if os.environ.get(PARENT_ENV):  # a run started by a sweep dies with the sweep (see bench.sweep)
        die_with_parent(int(os.environ.pop(PARENT_ENV)))
    compile_cache.enable()  # before any program is compiled; the processes this one starts inherit it
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "unavailable", None):
        print(f"bench: error: {args.command} is unavailable: {args.unavailable}", file=sys.stderr)
        return 2
    from bench.errors import USER_ERRORS

    try:
        return COMMANDS[args.command](args, extra)
    except USER_ERRORS as error:
        if os.environ.get("BENCH_DEBUG"):
            raise
        text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        message = text.strip().splitlines()[0] if text.strip() else type(error).__name__
        print(f"bench: error: {message}", file=sys.stderr)
        return 2
    except OSError as error:  # the file system said no: a read-only or full disk, a file in the way, ...
        if os.environ.get("BENCH_DEBUG"):
            raise
        print(f"bench: error: {describe_os_error(error, args)}", file=sys.stderr)
        return 1


def describe_os_error(error: OSError, args) -> str:
    """'<path>: <problem>' in one line; a failed write that names no file names the results root."""
    path = error.filename or getattr(args, "logdir", None) or getattr(args, "out", None) or getattr(args, "to", None)
    if path is None and args.command == "run":
        from bench.results import default_root

        path = default_root()
    problem = error.strerror or str(error) or type(error).__name__
    target = f" -> {error.filename2}" if error.filename2 else ""
    return f"{path}{target}: {problem}" if path is not None else problem


if __name__ == "__main__":
    stop_signals.hold()
    sys.exit(main())
