"""THICK PlaNet against flat CEM on toy keydoor, zero-shot, with THICK's protocol. Slow (whole runs).

THICK's zero-shot planning protocol (Gumbsch et al., ICLR 2024; shared/reference/thick.md, "THICK PlaNet";
docs/thick_planet.md), through the runner, in three steps:
1. `p2e` explores keydoor (Plan2Explore: its exploration actor collects the data); the test checks that the
   data hold key pick-ups and door openings, else no model trained on them can plan for the task;
2. `thick` trains only on that replay (`replay.load` + `run.offline`: no environment steps, the run's steps
   count update rounds);
3. `thick_planet` and `cem_planet` plan with that one model (`model`), on the same evaluation seeds (the
   planner runs share seed 0, so their final evaluation episodes are the same episodes).
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json
import time

import numpy as np
import pytest

from bench import runner
from bench.replay_load import open_source, read_main_table

THICK_PLANET = "agents.thick.planet:THICK_PLANET_SPEC"
CEM_PLANET = "agents.thick.planet:CEM_PLANET_SPEC"
HUD = (255, 200, 0)  # tasks/toy.py: keydoor paints the bottom image row in this colour while the key is held


def _scores(folder) -> list[dict]:
    with open(folder / "scores.jsonl") as file:
        return [json.loads(line) for line in file]


def _final_success(folder) -> list[float]:
    """Success of the final evaluation's episodes in episode order (episode i has the same env seed in every
    planner run of seed 0, so two planners' lists pair up)."""
    final = [s for s in _scores(folder) if s["mode"] == "eval" and s.get("final")]
    return [s["success"] for s in sorted(final, key=lambda s: s["episode"])]


def explore(root, steps: int, configs=("debug", "quick"), **overrides):
    """Plan2Explore's exploration data (its replay): no final evaluation, only the data matter here."""
    return runner.run(
        "p2e", "toy", "keydoor", seed=0, configs=configs, root=root, quiet=True,
        overrides={"run.steps": steps, "run.final_eval": False, **overrides},
    )  # fmt: skip


def data_coverage(p2e_run) -> dict:
    """Of the explorer's finished training episodes: how many held the key at some step (the HUD row of the
    stored image is the key colour) and how many opened the door (success)."""
    table = read_main_table(open_source(p2e_run))
    key_episodes = []
    for lane in range(table.workers):
        steps = table.lane_steps(lane)
        if not steps:
            continue
        held = (steps["image"][:, -1] == np.array(HUD, np.uint8)).all(axis=(-1, -2))
        starts = np.flatnonzero(steps["is_first"])
        ends = np.flatnonzero(steps["is_last"])
        for start in starts:
            after = ends[ends >= start]
            if len(after):  # a finished episode
                key_episodes.append(bool(held[start : after[0] + 1].any()))
    train = [s for s in _scores(p2e_run) if s["mode"] == "train" and not s["broken"]]
    key, door = int(np.sum(key_episodes)), int(sum(s["success"] for s in train))
    return {
        "episodes": len(train),
        "stored_episodes": len(key_episodes),
        "key_episodes": key,
        "door_episodes": door,
        "key": key / max(len(key_episodes), 1),
        "door": door / max(len(train), 1),
    }


# The explorer: 8 env workers at 1/8 of `quick`'s ratio, so 8x the data of one worker (docs/thick_planet.md,
# "Sixth run": 801 episodes, 209 with the key, against 30 at one worker). The high-level model learns where the
# key is from the pick-ups it sees; with ~30 its goals were a typical state whatever the key's position. 16
# workers at 1/16 of the ratio made both planners worse ("Seventh run"). The first 8,000 steps are the untrained
# actor's (`run.train_fill`; the default 1,024): the trained explorer never opens the door, so nearly all door
# openings come from this prefill. With the default the door count sat at the data check and moved with float
# rounding alone (3 to 6 for one commit and two XLA optimisation levels, "Reruns on 2026-12-05"); with 8,000 it
# was 33 and 38 ("Eighth run", and the rerun).
EXPLORE_STEPS = 32_000
EXPLORER = {"run.envs": 8, "run.train_ratio": 16.0, "run.train_fill": 8000}


# The offline model's batches: THICK's sequence length (TF2 batches 16 x 50; `debug` + `quick` replay 8 x 16,
# too short for the high-level model to see a key pick-up 5-15 steps ahead) at 1.5x `debug`'s steps per batch,
# a high-level model of two 256-unit layers (`debug`: one of 32), and the sparsity beta that, at this length,
# makes the contexts change almost only at key pick-ups (docs/thick_planet.md, "Fifth run": rate 0.013, 85%
# of pick-ups).
OFFLINE_MODEL = {"batch_size": 4, "batch_length": 48, "highlevel.units": 256, "highlevel.layers": 2,
                 "loss_scales.sparse": 100.0}  # fmt: skip


# The planners' CEM horizon, for both. THICK PlaNet's high-level goal is there to reach beyond the flat
# planner's horizon. Keydoor's shortest key-then-door path is 7.45 steps on average over 100 layouts (seeds
# 1000-1099, at most 13), so at THICK's horizon of 12 the flat planner sees 98 of 100 tasks whole and the goal
# has nothing to add (docs/thick_planet.md, "Ninth run"). At 4 steps, 93 of the 100 paths are longer than the
# horizon, as in the long-horizon tasks the hierarchy is for. Everything else is THICK's setting.
PLAN_HORIZON = 4


def train_offline(p2e_run, root, rounds: int, configs=("debug", "quick")):
    """THICK trained only on the explorer's replay: `rounds` update rounds, no environment steps."""
    return runner.run(
        "thick", "toy", "keydoor", seed=0, configs=configs, root=root, quiet=True,
        overrides={"run.offline": True, "replay.load": str(p2e_run), "run.steps": rounds,
                   "run.final_eval": False, "imagination.discount_horizon": 50, **OFFLINE_MODEL},
    )  # fmt: skip


def evaluate(planner: str, model, root, episodes: int, configs=(), **overrides):
    """A planner run: one policy step (the run's budget), then the final evaluation over `episodes`."""
    folder = runner.run(
        planner, "toy", "keydoor", seed=0, configs=configs, root=root, quiet=True,
        overrides={"model": str(model), "run.steps": 1, "run.envs": 4, "run.eval_episodes": episodes, **overrides},
    )  # fmt: skip
    success = _final_success(folder)
    assert len(success) == episodes, (planner, len(success))
    return np.asarray(success, np.float64)


def _timed(label, fn, *args, **kwargs):
    start = time.monotonic()
    out = fn(*args, **kwargs)
    print(f"{label}: {time.monotonic() - start:.0f} s", flush=True)
    return out


@pytest.mark.slow
def test_planners_run_through_the_runner_on_a_thick_run(tmp_path):
    """Plumbing: tiny P2E run -> THICK offline on its replay -> both planners (tiny searches) load the model."""
    data = explore(tmp_path / "p2e", 200, ("debug",), **{"run.train_fill": 100})
    coverage = data_coverage(data)
    # 200 policy steps (reset steps count) of 40-step episodes: 5 recorded, the 5th one's last step not yet stored
    assert coverage["episodes"] == 5 and coverage["stored_episodes"] == 4, coverage
    model = train_offline(data, tmp_path / "model", 20, ("debug",))
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["offline"] is True and manifest["env_frames"] == 0 and manifest["updates"] >= 20
    assert manifest["replay_source"]["folder"] == str(data.resolve())
    for planner in (THICK_PLANET, CEM_PLANET):
        # `debug` shrinks the search; the model given here replaces its untrained one.
        success = evaluate(planner, model, tmp_path / planner.split(":")[1], 4, configs=("debug",))
        assert set(np.unique(success)) <= {0.0, 1.0}


@pytest.mark.slow
def test_thick_planet_beats_flat_cem_on_keydoor(tmp_path):
    """Same model (THICK trained offline on P2E data), same 100 evaluation episodes: THICK PlaNet's success
    rate exceeds flat CEM's.

    The bar is measured here: flat CEM's success on this model plus one standard error of the paired
    difference (episode i has the same env seed for both planners), not a constant. 100 episodes, not 40: on
    the sixth run's model the first 40 gave 0.275 against 0.200, all 100 gave 0.200 against 0.160
    (docs/thick_planet.md, "Eighth run"). THICK's planner settings (1000 candidates, top 100, 10 iterations;
    100 simulations) but a CEM horizon of 4 (`PLAN_HORIZON`) for both: the planners reach beyond it only
    through the high-level goal, which is what keydoor's key-then-door sub-goals ask for; at THICK's 12 the
    flat planner sees almost every keydoor task whole ("Ninth run"). THICK PlaNet's new MCTS leaves
    are worth the model's coarse critic (`leaf_value: critic`, MuZero's leaf evaluation; THICK's own leaf is
    its edge reward, which is zero everywhere but the door in this task, so the search could not tell the
    goals apart).
    """
    data = _timed("p2e", explore, tmp_path / "p2e", EXPLORE_STEPS, **EXPLORER)
    coverage = data_coverage(data)
    print(f"p2e data: {coverage}", flush=True)
    # the data must show both sub-goals, else the comparison says nothing about planning
    assert coverage["key_episodes"] >= 100 and coverage["door_episodes"] >= 5, coverage
    model = _timed("thick offline", train_offline, data, tmp_path / "model", 4000)
    episodes = 100
    horizon = {"cem.horizon": PLAN_HORIZON}
    thick = _timed("thick_planet", evaluate, THICK_PLANET, model, tmp_path / "thick_planet", episodes,
                   leaf_value="critic", **horizon)  # fmt: skip
    flat = _timed("cem_planet", evaluate, CEM_PLANET, model, tmp_path / "cem_planet", episodes, **horizon)
    stderr = (thick - flat).std(ddof=1) / np.sqrt(episodes)
    print(f"keydoor zero-shot success: thick_planet {thick.mean():.3f}, cem_planet {flat.mean():.3f} "
          f"(the same {episodes} episodes, stderr of the paired difference {stderr:.3f})")  # fmt: skip
    assert thick.mean() > flat.mean() + stderr
