"""Turn the files `scripts/gpu_check.sh` wrote into one Markdown report (printed to stdout)."""

import json
import sys
from pathlib import Path


def main(out_dir: str, size: str) -> int:
    folder = Path(out_dir)
    device = (folder / "device.txt").read_text().strip() if (folder / "device.txt").exists() else "unknown"
    lines = [f"# GPU check ({size})", "", f"Device: `{device}`", "",
             "`bench perf agent --agent A --configs SIZE --updates 5` (float32, synthetic 64x64 RGB, 6 actions, the "
             "agent's batch); products = matmul + convolution FLOPs with loops unrolled; utilisation = achieved product "
             "rate / measured float32 matmul rate of this device (XLA's default matmul precision).", "",
             "| agent | batch | parameters | compile s | update s (median) | updates/s | GFLOP/update | GFLOP/s | "
             "matmul peak GFLOP/s | utilisation | policy steps/s | XLA temp MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for path in sorted(folder.glob("perf_*.json")):
        f = json.loads(path.read_text())
        lines.append(
            f"| {f['agent']} | {f['batch']} x {f['length']} | {f['parameters'] / 1e6:.2f} M | {f['update_compile_s']:.1f} | {f['update_s_median']:.4f} | "
            f"{f['updates_per_s']:.1f} | {f['update_gflop_products']:.1f} | {f['achieved_gflops']:.0f} | "
            f"{f['matmul_peak_gflops']:.0f} | {100 * f['utilisation']:.1f}% | {f['policy_steps_per_s']:.0f} | "
            f"{f['xla_temp_mib']:.0f} |"
        )
    failed = [line for line in (folder / "log.txt").read_text().splitlines() if line.endswith(" failed")] \
        if (folder / "log.txt").exists() else []
    if failed:
        lines += ["", "Failed: " + "; ".join(failed) + " (see log.txt)."]
    if (folder / "tests.txt").exists():
        lines += ["", "Numerics tests on the device:", "", "```", (folder / "tests.txt").read_text().strip(), "```"]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
