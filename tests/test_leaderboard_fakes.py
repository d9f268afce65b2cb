"""Tiny fake run folders in the layout of `bench.results`, for the leaderboard tests (no tests here)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from bench import config as config_lib
from bench.results import MANIFEST_FORMAT, run_dir


def config_for(agent: str, variant: int = 0) -> dict:
    return {
        "run": {"steps": 0, "train_ratio": 32.0},
        "replay": {"capacity": 1000},
        "logger": {"outputs": ["jsonl"]},
        "env": {"size": 16},
        "agent": {"name": agent, "variant": variant},
    }


def config_hash(config: dict) -> str:
    hashed = {k: v for k, v in config.items() if k not in config_lib.UNHASHED_SECTIONS}
    return hashlib.sha256(config_lib.canonical_json(hashed).encode()).hexdigest()[:10]


def episode(step: int, value: float, *, mode: str = "train", final: bool = False, broken: bool = False,
            frames_per_step: int = 1, index: int = 0, **extra) -> dict:  # fmt: skip
    record = {
        "step": step, "frames": step * frames_per_step, "mode": mode, "worker": 0, "episode": index,
        "return": value, "length": 10, "broken": broken, **extra,
    }  # fmt: skip
    if mode == "eval":
        record.update(eval_round=0, final=final)
    return record


def default_episodes(
    final_returns=(1.0, 2.0, 3.0), budget: int = 20_000, train_return: float = 0.5
) -> list[dict]:
    train = [episode(step, train_return, index=i) for i, step in enumerate(range(2_000, budget + 1, 2_000))]
    evals = [episode(budget, r, mode="eval", final=True, index=i) for i, r in enumerate(final_returns)]
    return train + evals


def write_run(
    root: Path,
    *,
    suite: str = "toy",
    task: str = "reach",
    agent: str = "random",
    seed: int = 0,
    variant: int = 0,
    budget: int = 20_000,
    agent_steps: int | None = None,
    status: str = "finished",
    dirty: bool = False,
    episodes: list[dict] | None = None,
    metrics: list[dict] | None = None,
    wall_time: float = 1.0,
    hardware: dict | None = None,
    segments: list[dict] | None = None,
) -> Path:
    config = config_for(agent, variant)
    digest = config_hash(config)
    folder = run_dir(root, suite, task, agent, digest, seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    manifest = {
        "format": MANIFEST_FORMAT, "status": status, "suite": suite, "task": task, "agent": agent, "seed": seed,
        "config_hash": digest, "protocol": {"eval_protocol": "final_eval"}, "budget": budget,
        "command": "bench run", "code": {"commit": "0123456789abcdef", "dirty": dirty}, "packages": {},
        "hardware": hardware or {}, "created": "2026-01-01T00:00:00+00:00", "updated": "2026-01-01T00:00:00+00:00",
        "wall_time": wall_time, "agent_steps": budget if agent_steps is None else agent_steps, "env_frames": budget,
        "segments": segments or [],
    }  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    records = numbered(default_episodes(budget=budget) if episodes is None else episodes)
    (folder / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    metric_records = [{"step": 1000, "frames": 1000, "train/loss": 0.5}] if metrics is None else metrics
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metric_records))
    return folder


def numbered(records: list[dict]) -> list[dict]:
    """Episode indices counted per worker and mode (and evaluation round), as a run writes them."""
    counts: dict[tuple, int] = {}
    out = []
    for record in records:
        key = (record["mode"], record.get("eval_round"), record["worker"])
        out.append({**record, "episode": counts.get(key, 0)})
        counts[key] = counts.get(key, 0) + 1
    return out
