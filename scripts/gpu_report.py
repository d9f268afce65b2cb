"""Turn the files `scripts/gpu_check.sh` wrote into one Markdown report (printed to stdout)."""

import json
import statistics
import sys
from pathlib import Path


def _text(folder: Path, name: str, default: str = "") -> str:
    path = folder / name
    return path.read_text().strip() if path.exists() else default


def _percent(fraction: float | None) -> str:
    return "—" if fraction is None else f"{100 * fraction:.1f}%"


def _size(figures: dict) -> str:
    return next((c for c in figures["configs"] if c.startswith("size") or c == "debug"), "default")


def _quiet(figures: dict) -> str:
    """How many of the run's timed sections had the host to themselves (no other perf run compiling)."""
    quiet, sections = figures.get("timed_sections_quiet_host", (0, 0))
    return "yes" if quiet == sections else f"{quiet} of {sections} sections"


def _streams(folder: Path):
    """(figures, stream name, stream figures) of every perf run's every stream, in file order."""
    for path in sorted(folder.glob("perf_*.json")):
        f = json.loads(path.read_text())
        for stream, s in f["streams"].items():
            yield f, stream, s


def _ceiling_lines(folder: Path) -> list[str]:
    """Runs made with GPU_CHECK_PERF_ARGS=--ceiling: the products-only time and the utilisation it allows."""
    rows = []
    for f, stream, s in _streams(folder):
        c = s.get("ceiling")
        if c and c.get("ceiling_utilisation") is not None:
            rows.append(f"| {f['agent']} | {_size(f)} | {f.get('compute_dtype', 'float32')} | {stream} | "
                        f"{1e3 * c['products_only_s']:.1f} | {100 * c['products_share_of_update']:.0f}% | "
                        f"{100 * s['utilisation']:.1f}% | {100 * c['ceiling_utilisation']:.1f}% |")  # fmt: skip
    if not rows:
        return []
    return ["", "Ceiling (`--ceiling`: every product of the update timed alone; bench/perf_ceiling.py):", "",
            "| agent | size | compute | stream | products alone ms | share of the update | utilisation "
            "| ceiling |",
            "|---|---|---|---|---|---|---|---|", *rows]  # fmt: skip


def _vmap_lines(folder: Path) -> list[str]:
    """Runs made with --vmap-seeds: the stacked update of N seeds against one seed's."""
    rows = []
    for f, stream, s in _streams(folder):
        v = s.get("vmap")
        if v:
            rows.append(f"| {f['agent']} | {_size(f)} | {f.get('compute_dtype', 'float32')} | {stream} | "
                        f"{v['seeds']} | {s['update_s_median']:.4f} | {v['update_s_median']:.4f} | "
                        f"{v['seed_updates_per_s']:.1f} | {v['speedup_over_one_seed']:.2f}x |")  # fmt: skip
    if not rows:
        return []
    return ["", "Seeds vmapped in one update (`--vmap-seeds N`, as `bench run --seeds 0:N --vmap`): the update of N "
            "stacked seeds in one call against one seed's update.", "",
            "| agent | size | compute | stream | seeds | one seed s | N seeds s | seed-updates/s | x one seed |",
            "|---|---|---|---|---|---|---|---|---|", *rows]  # fmt: skip


def _training_run_lines(folder: Path) -> list[str]:
    """The short training run: how far it got, its last logged rate, and how it ended."""
    setting = _text(folder, "run.txt").split()
    if not setting:
        return []
    agent, suite, task, *configs, seconds = setting
    lines = ["", f"Training run: `bench run --agent {agent} --suite {suite} --task {task} --configs {' '.join(configs)}`"
             f", stopped with SIGINT after {seconds} s (compilation included)."]  # fmt: skip
    metrics = sorted(folder.glob("training_run/**/metrics.jsonl"))
    if not metrics:
        return lines + ["", "It logged no metrics (see log.txt)."]
    records = [json.loads(line) for line in metrics[0].read_text().splitlines() if line.strip()]
    rated = [r for r in records if "perf/policy_steps_per_sec" in r]
    manifest = metrics[0].parent / "manifest.json"
    status = json.loads(manifest.read_text()).get("status", "unknown") if manifest.exists() else "no manifest"
    last = rated[-1] if rated else records[-1]
    lines += ["", f"Reached agent step {last.get('step', 0):,} ({last.get('frames', 0):,} frames) with "
              f"{last.get('train/updates', 0):,} updates; the last logged interval ran "
              f"{last.get('perf/policy_steps_per_sec', float('nan')):.1f} agent steps/s, training included; "
              f"run status: {status}."]  # fmt: skip
    return lines


def _estimate_lines(folder: Path) -> list[str]:
    """`bench perf agent --estimate SUITE`: the wall time of one run and of a board, with its arithmetic."""
    lines = []
    for path in sorted(folder.glob("estimate_*.json")):
        f = json.loads(path.read_text())
        e = f["estimate"]
        lines += ["", f"Estimate for {e['suite']} (`bench perf agent --estimate`, {f['agent']} with presets "
                  f"{' '.join(f['configs'])}, {f.get('compute_dtype', 'float32')}): one run "
                  f"{e['run_s'] / 3600:.2f} h, the board {e['board_s'] / 3600:.1f} h on this device, one run at a "
                  f"time.", "", "```", *e["lines"], "```"]  # fmt: skip
    return lines


def _steady_rate(metrics: Path) -> tuple[float, int]:
    """(median agent steps/s of the records logged once updates had started, last agent step logged)."""
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    rates = [r["perf/policy_steps_per_sec"] for r in records
             if r.get("train/updates", 0) > 0 and "perf/policy_steps_per_sec" in r]  # fmt: skip
    return (statistics.median(rates) if rates else 0.0), max((r.get("step", 0) for r in records), default=0)


def _seeds_lines(folder: Path) -> list[str]:
    """The same seeds trained in one vmapped process and as separate processes at once: aggregate agent steps/s."""
    setting = _text(folder, "seeds.txt").split()
    if not setting:
        return []
    agent, suite, task, *configs, seeds, seconds = setting
    if not any((folder / way).exists() for way in ("seeds_vmap", "seeds_processes")):
        return []  # skipped (named in the report's list of skipped jobs)
    lines = ["", f"Seeds 0-{int(seeds) - 1} trained in one process, vmapped (`--seeds 0:{seeds} --vmap`), and as "
             f"{seeds} processes at once (`--parallel {seeds}`): `bench run --agent {agent} --suite {suite} --task "
             f"{task} --configs {' '.join(configs)}`, each way stopped with SIGINT after {seconds} s (compilation "
             "included). Rate = the median `perf/policy_steps_per_sec` of a run's records once its updates had "
             "started; aggregate = the sum over seeds.", "",
             "| execution | runs with updates | agent steps/s per seed | aggregate agent steps/s | last steps |",
             "|---|---|---|---|---|"]  # fmt: skip
    aggregates = {}
    for way, label in (("seeds_vmap", "vmapped, 1 process"), ("seeds_processes", f"{seeds} processes")):
        figures = [_steady_rate(m) for m in sorted((folder / way).glob("**/metrics.jsonl"))]
        rated = [rate for rate, _ in figures if rate > 0]
        aggregates[way] = sum(rated)
        lines.append(f"| {label} | {len(rated)} of {seeds} | {', '.join(f'{r:.1f}' for r in rated) or '-'} | "
                     f"{sum(rated):.1f} | {', '.join(f'{step:,}' for _, step in figures) or '-'} |")  # fmt: skip
    if aggregates["seeds_processes"] > 0 and aggregates["seeds_vmap"] > 0:
        lines += ["", f"Vmapped / processes, aggregate: {aggregates['seeds_vmap'] / aggregates['seeds_processes']:.2f}x."]
    return lines


def main(out_dir: str) -> int:
    folder = Path(out_dir)
    lines = ["# GPU check", "", f"Device: `{_text(folder, 'device.txt', 'unknown')}`", "",
             "`bench perf agent --agent A --configs SIZE --set compute_dtype=DTYPE` (synthetic 64x64 RGB, 6 actions, "
             "the agent's batch); products = live matmul + convolution FLOPs with loops unrolled (dead code, which XLA "
             "drops, not counted); utilisation = achieved "
             "product rate / this device's measured matmul rate in the compute dtype (float32 at XLA's default "
             "precision, or bfloat16); by model FLOPs: the same with each encoder stage counted as its plain "
             "convolution and pooling (the space-to-depth first stage does 1.44x their multiply-adds).", "",
             "| agent | size | compute | batch | parameters | compile s | update s (median) | updates/s | GFLOP/update | "
             "GFLOP/s | matmul peak GFLOP/s | utilisation | by model FLOPs | policy steps/s | XLA temp MiB | "
             "timed on a quiet host |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for path in sorted(folder.glob("perf_*.json")):
        f = json.loads(path.read_text())
        dtype = f.get("compute_dtype", "float32")
        lines.append(
            f"| {f['agent']} | {_size(f)} | {dtype} | {f['batch']} x {f['length']} | {f['parameters'] / 1e6:.2f} M | "
            f"{f['update_compile_s']:.1f} | {f['update_s_median']:.4f} | {f['updates_per_s']:.1f} | "
            f"{f['update_gflop_products']:.1f} | {f['achieved_gflops']:.0f} | {f['matmul_peak_gflops']:.0f} | "
            f"{100 * f['utilisation']:.1f}% | {_percent(f.get('model_utilisation'))} | "
            f"{f['policy_steps_per_s']:.0f} | {f['xla_temp_mib']:.0f} | "
            f"{_quiet(f)} |"
        )
    float32_only = _text(folder, "float32_only.txt").split()
    if float32_only:
        lines += ["", f"Float32 only (no compute_dtype option): {', '.join(float32_only)}."]
    lines += _vmap_lines(folder)
    lines += _seeds_lines(folder)
    lines += _estimate_lines(folder)
    lines += _ceiling_lines(folder)
    lines += _training_run_lines(folder)
    failed = _text(folder, "failed.txt").splitlines()
    if failed:
        lines += ["", "Failed: " + "; ".join(failed) + " (see log.txt)."]
    skipped = _text(folder, "skipped.txt").splitlines()
    if skipped:
        lines += ["", "Skipped to stay within the time budget: " + "; ".join(skipped) + "."]
    if _text(folder, "seconds.txt"):
        lines += ["", f"Wall time of the check: {_text(folder, 'seconds.txt')} s."]
    if (folder / "tests.txt").exists():
        lines += ["", "Numerics tests on the device:", "", "```", _text(folder, "tests.txt"), "```"]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
