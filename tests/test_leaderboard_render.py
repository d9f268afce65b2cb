"""Outputs: byte-identical on repeat, escaped text, and an HTML page that renders in a real headless browser."""

import csv
import html
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from leaderboard import board, browser, load, render
from tests.test_leaderboard_fakes import default_episodes, episode, write_run

ROOT = Path(__file__).resolve().parent.parent
TOY_TASKS = ("reach", "keydoor", "point")


def _toy_runs(root: Path, agents=("alpha", "beta")) -> Path:
    for a, agent in enumerate(agents):
        for t, task in enumerate(TOY_TASKS):
            for seed in range(3):
                finals = [1.0 + a + 0.1 * t + 0.2 * seed, 2.0 + a - 0.1 * seed]
                train = [episode(step, 0.1 * step / 2000 + a + seed, index=i)
                         for i, step in enumerate(range(1000, 20_001, 1000))]  # fmt: skip
                evals = [episode(20_000, r, mode="eval", final=True, index=i) for i, r in enumerate(finals)]
                write_run(root, task=task, agent=agent, seed=seed, episodes=train + evals)
    return root


def _leaderboard_command(runs: Path, out: Path) -> None:
    command = [sys.executable, "-m", "leaderboard", "leaderboard", "--suite", "atari100k", "--runs", str(runs),
               "--out", str(out), "--reps", "300", "--seed", "3"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


def test_same_command_twice_gives_byte_identical_outputs(tmp_path):
    runs = tmp_path / "runs"
    from tasks.atari_games import GAMES

    for t, task in enumerate(GAMES):
        for seed in range(2):
            finals = [100.0 * (t + 1) + 10 * seed, 50.0 * (t + 1)]
            episodes = [episode(step, 10.0 * t + step / 10_000, frames_per_step=4, index=i)
                        for i, step in enumerate(range(10_000, 100_001, 10_000))]  # fmt: skip
            episodes += [episode(100_000, r, mode="eval", final=True, frames_per_step=4, index=i)
                         for i, r in enumerate(finals)]  # fmt: skip
            write_run(
                runs, suite="atari100k", task=task, agent="mine", seed=seed, budget=100_000, episodes=episodes
            )
    first, second = tmp_path / "first", tmp_path / "second"
    _leaderboard_command(runs, first)
    _leaderboard_command(runs, second)
    names = sorted(p.name for p in first.iterdir())
    for required in ("leaderboard.md", "leaderboard.json", "aggregates.csv", "per_task.csv", "improvement.csv",
                     "index.html", "aggregates.svg", "profiles.svg", "improvement.svg", "curves.svg"):  # fmt: skip
        assert required in names
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), f"{name} differs between runs"
    # our runs are ranked among the 14 references, each row with its run count and protocol
    data = json.loads((first / "leaderboard.json").read_text())
    rows = {row["method"]: row for row in data["rows"]}
    assert len(rows) == 15
    (ours,) = [row for row in data["rows"] if row["kind"] == "runs"]
    assert ours["method"].startswith("mine@") and ours["protocol"] == "final_eval"
    assert all(task["runs"] == 2 for task in ours["per_task"].values())
    assert ours["curve"] and len(ours["curve"]["frames"]) == 10
    assert {(p["x"], p["y"]) for p in data["probability_of_improvement"]} == {
        (ours["method"], label) for label in rows if label != ours["method"]
    }
    markdown = (first / "leaderboard.md").read_text()
    for label in rows:
        assert f"| {label.replace('|', chr(92) + '|')} |" in markdown


def test_text_from_result_files_is_escaped(tmp_path):
    agent = "<img src=x onerror=alert(1)>|[x](javascript:alert(1))<javascript:alert(2)>"
    formula = '=HYPERLINK("http://evil.example","x")'
    runs = tmp_path / "runs"
    write_run(runs, agent=agent, episodes=default_episodes())
    write_run(runs, agent=formula, episodes=default_episodes())
    built = board.build("toy", roots=[runs], reps=50, tasks=["reach"])
    out = tmp_path / "out"
    render.write(built, out, plots=False)
    page = (out / "index.html").read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;|[x](javascript:alert(1))" in page
    markdown = (out / "leaderboard.md").read_text()
    assert "<img" not in markdown and "<javascript" not in markdown and not re.search(r"(?<!\\)\]\(", markdown)
    assert "&lt;img src=x onerror=alert(1)&gt;\\|\\[x\\](javascript:alert(1))&lt;javascript:alert(2)&gt;@" in markdown
    methods = {row["method"] for row in json.loads((out / "leaderboard.json").read_text())["rows"]}
    assert any(m.startswith(agent) for m in methods) and any(m.startswith(formula) for m in methods)
    for name in ("aggregates.csv", "per_task.csv", "curves.csv"):
        cells = [cell for row in csv.reader(io.StringIO((out / name).read_text())) for cell in row]
        assert not [cell for cell in cells if cell[:1] in ("=", "+", "@")], name
        assert any(cell.startswith("'" + formula) for cell in cells), name
        assert not [cell for cell in cells if cell.startswith("-") and not _is_number(cell)], name


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_CHECKER = """
<script>
window.addEventListener('load', () => {
  const images = Array.from(document.images).map(i => ({
    id: i.id, complete: i.complete, natural: i.naturalWidth, shown: i.getBoundingClientRect().width}));
  const tables = {};
  document.querySelectorAll('table').forEach(t => {
    tables[t.id] = {rows: t.querySelectorAll('tbody tr').length, shown: t.getBoundingClientRect().height}; });
  const out = document.createElement('pre');
  out.id = 'render-check';
  out.textContent = JSON.stringify({images, tables, title: document.title});
  document.body.appendChild(out);
});
</script>
"""


def _chromium_or_fail():
    if browser.find_chromium() is None:
        if os.environ.get("BENCH_NO_BROWSER") == "1":
            pytest.skip("BENCH_NO_BROWSER=1: the browser check was switched off explicitly")
        pytest.fail(
            f"Chromium is needed for this test: {browser.INSTALL_HINT} (or set BENCH_NO_BROWSER=1 to skip)"
        )


def test_html_page_renders_tables_and_plots_in_headless_chromium(tmp_path):
    _chromium_or_fail()
    built = board.build("toy", roots=[_toy_runs(tmp_path / "runs")], reps=200, tasks=list(TOY_TASKS))
    out = tmp_path / "out"
    render.write(built, out)
    page = (out / "index.html").read_text()
    checked = out / "checked.html"  # the same page plus a script that reports what the browser rendered
    checked.write_text(page.replace("</body>", _CHECKER + "</body>"))
    dom = browser.dump_dom(checked)
    match = re.search(r'<pre id="render-check">(.*?)</pre>', dom, re.DOTALL)
    assert match, f"the page did not finish loading in Chromium:\n{dom[:2000]}"
    report = json.loads(html.unescape(match.group(1)))
    assert report["title"] == "Leaderboard: toy"
    images = {image["id"]: image for image in report["images"]}
    assert set(images) == {"plot-aggregates", "plot-profiles", "plot-improvement", "plot-curves"}
    for name, image in images.items():
        assert image["complete"] and image["natural"] > 100 and image["shown"] > 100, (name, image)
    tables = report["tables"]
    assert tables["aggregate"]["rows"] == 2 and tables["per-task"]["rows"] == 3  # reach_progress: unselected, unscored
    assert tables["methods"]["rows"] == 2 and tables["improvement"]["rows"] == 1
    assert all(table["shown"] > 0 for table in tables.values())
    # the documented screenshot command: `bench leaderboard ... --screenshot` calls this
    png = browser.screenshot(out / "index.html", out / "screenshot.png", width=1200, height=2500)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 2500)


@pytest.mark.slow
def test_atari_leaderboard_at_full_size_finishes_in_about_a_minute(tmp_path):
    """All 14 Atari reference rows (up to 100 runs x 26 games) at 50,000 replicates, plots included.
    CPU time is asserted (wall time depends on what else the machine runs)."""
    import resource
    import time

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    (tmp_path / "no-runs").mkdir()
    command = [sys.executable, "-m", "leaderboard", "leaderboard", "--suite", "atari100k", "--out", str(tmp_path),
               "--runs", str(tmp_path / "no-runs"), "--reps", "50000", "--quiet"]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.returncode == 0, result.stderr[-3000:]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"atari100k leaderboard, 14 rows, 50,000 reps: {cpu:.1f} s CPU, {wall:.1f} s wall")
    assert cpu < 90
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    assert data["reps"] == 50_000 and len(data["rows"]) == 14


def test_per_task_table_lists_selected_and_scored_tasks_only(tmp_path):
    built = board.build("toy", roots=[_toy_runs(tmp_path / "runs")], reps=50, tasks=["reach"])
    _, body = render.per_task_table(built)
    # keydoor and point have runs but are not selected; reach_progress has neither
    assert [row[0] for row in body] == ["reach", "keydoor (not aggregated)", "point (not aggregated)"]


def test_methods_table_gives_the_median_and_range_of_wall_time_per_run_a_vmapped_group_split_over_its_seeds(
    tmp_path,
):
    runs = tmp_path / "runs"
    cpu = {"jax_backend": "cpu", "cpus": 64, "usable_cpus": 2}  # XLA's threads follow the affinity, not cpus
    group = [{"vmap": True, "vmap_seeds": [2, 3, 4]}]
    # alpha: two runs alone (10 and 20 min) and a group of 3 seeds that took 45 min in one process (15 each)
    for seed, seconds, segments in ((0, 600, None), (1, 1200, None), (2, 2700, group), (3, 2700, group),
                                    (4, 2700, group)):  # fmt: skip
        write_run(runs, agent="alpha", seed=seed, wall_time=seconds, hardware=cpu, segments=segments)
    # beta: 2 h and 4 h on a GPU; gamma: manifests without wall_time (made by another tool)
    for seed, seconds in ((0, 7200), (1, 14400)):
        write_run(runs, agent="beta", seed=seed, wall_time=seconds, hardware={"jax_backend": "gpu"})
    gamma = write_run(runs, agent="gamma")
    manifest = json.loads((gamma / "manifest.json").read_text())
    del manifest["wall_time"]
    (gamma / "manifest.json").write_text(json.dumps(manifest))

    built = board.build("toy", roots=[runs], reps=50, tasks=["reach"])
    header, body = render.methods_table(built)
    cells = {row[0].split("@")[0]: row[header.index("Wall time per run")] for row in body}
    assert cells["alpha"] == "15.0 min (10.0–20.0 over 5 runs; cpu, 2 threads)"
    assert cells["beta"] == "3.0 h (2.0–4.0 over 2 runs; gpu)"
    assert cells["gamma"] == ""

    manifest["wall_time"] = -5.0
    (gamma / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"manifest.json: field 'wall_time' must be a finite number >= 0"):
        board.build("toy", roots=[runs], reps=50, tasks=["reach"])


def test_methods_table_names_each_rows_code_and_the_patch_of_a_dirty_checkout(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, agent="alpha", seed=0)
    write_run(runs, agent="alpha", seed=1, dirty=True)  # changes not recorded (an older run)
    recorded = write_run(runs, agent="alpha", seed=2, dirty=True)
    manifest = json.loads((recorded / "manifest.json").read_text())
    manifest["code"]["diff"] = "code-0123456789ab.diff"
    (recorded / "manifest.json").write_text(json.dumps(manifest))
    header, body = render.methods_table(board.build("toy", roots=[runs], reps=50, tasks=["reach"]))
    notes = body[0][header.index("Notes")]
    assert notes.endswith("code: 0123456789abcdef, 0123456789abcdef+dirty, "
                          "0123456789abcdef+dirty (code-0123456789ab.diff)")  # fmt: skip


def test_a_run_vmapped_in_one_segment_and_alone_in_the_next_is_charged_each_segments_share():
    path = Path("manifest.json")
    # 30 min in a group of 3 seeds (10 min each), then 10 min alone: 20 min
    manifest = {"seed": 5, "wall_time": 2400.0,
                "segments": [{"vmap_seeds": [4, 5, 6], "wall_time": 1800.0}, {"wall_time": 600.0}]}  # fmt: skip
    assert load.run_cost_seconds(path, manifest) == 1200.0
    older = {"seed": 5, "wall_time": 2400.0, "segments": [{"vmap_seeds": [4, 5, 6]}, {}]}  # no segment times
    assert load.run_cost_seconds(path, older) == 2400.0  # charged by the last segment's group, as before
    manifest["segments"][1]["wall_time"] = 3000.0
    with pytest.raises(ValueError, match=r"'wall_time' of segment 2 must lie in \[0, the run's 2400.0\]"):
        load.run_cost_seconds(path, manifest)


def test_methods_table_says_a_row_with_one_run_per_task_has_point_intervals(tmp_path):
    runs = tmp_path / "runs"
    for seed in range(2):
        write_run(runs, agent="alpha", seed=seed)
    write_run(runs, agent="beta", seed=0)
    built = board.build("toy", roots=[runs], reps=50, tasks=["reach"])
    header, body = render.methods_table(built)
    notes = {row[0].split("@")[0]: row[header.index("Notes")] for row in body}
    assert "one run per task" not in notes["alpha"]
    assert "one run per task: the bootstrap has nothing to resample" in notes["beta"]
    beta = next(row for row in built.rows if row.label.startswith("beta")).stats.metrics["iqm"]
    assert beta.low == beta.point == beta.high  # what the note explains
