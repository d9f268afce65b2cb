"""The shipped CPU-plan board (docs/boards/cpu/) is a pure function of the published result files: rebuilding
it from results/ with the plan gives every file byte for byte (tables, JSON, HTML and plots)."""

from __future__ import annotations

from pathlib import Path

from tests.runs import bench

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "docs" / "boards" / "cpu"
# The command that built the shipped board (README, "Results"), with the output redirected.
COMMAND = ["leaderboard", "--plan", "plans/cpu.yaml", "--runs", "results", "--quiet"]


def test_shipped_board_rebuilds_byte_for_byte(tmp_path):
    out = tmp_path / "board"
    bench(*COMMAND, "--out", out, root=tmp_path / "no_runs")  # BENCH_ROOT empty: only results/ is read
    shipped = sorted(p.relative_to(SHIPPED) for p in SHIPPED.rglob("*") if p.is_file())
    rebuilt = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert rebuilt == shipped
    for name in shipped:
        assert (out / name).read_bytes() == (SHIPPED / name).read_bytes(), name
