"""`bench perf`: throughput benchmarks (runner overhead, environments, agents)."""

from __future__ import annotations


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    runner = sub.add_parser("runner", help="runner env throughput vs a bare loop over the same vectorised envs")
    runner.add_argument("--suite", default="toy")
    runner.add_argument("--task", default="reach")
    runner.add_argument("--envs", type=int, default=4)
    runner.add_argument("--steps", type=int, default=4000, help="agent steps per measurement")
    runner.add_argument("--repeats", type=int, default=3)
    envs = sub.add_parser("envs", help="per suite: single-env steps/s and vectorised steps/s with N workers")
    envs.add_argument("--suite", nargs="+", default=None, help="suites (default: all registered)")
    envs.add_argument("--envs", type=int, default=2)
    envs.add_argument("--steps", type=int, default=500)
    agent = sub.add_parser("agent", help="agent update/act throughput, compile time, FLOPs and utilisation")
    try:
        from bench import perf_agent
    except ImportError as error:
        agent.set_defaults(unavailable=str(error))
    else:
        perf_agent.add_arguments(agent)
        perf_agent.add_estimate_arguments(agent)


def run(args) -> int:
    if args.what == "runner":
        from bench.perf_runner import perf_runner

        return perf_runner(args)
    if args.what == "envs":
        from bench.perf_runner import perf_envs

        return perf_envs(args)
    from bench import perf_agent

    return perf_agent.run_estimate(args) if args.estimate else perf_agent.run(args)
