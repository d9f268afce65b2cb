"""Starting a run from another run's replay: THICK's `train_from_replay` (`--replay.load RUN_DIR`, then
online) and `train_only_on_replay` (`--replay.load RUN_DIR --run.offline true`: no environment interaction
except evaluation).

The source is a run folder with a checkpoint (usually a finished run). At the fresh start of the new run the
steps of the source's main replay table are copied into the new run's main table; from then on they are part
of the new run's own replay, saved in its checkpoints, so a killed run resumes without reading the source
again. What is copied, and why:

* observations (sensors and the step keys reward/is_first/is_last/is_terminal) and actions, read from the
  source's verified checkpoint (`.npz` chunks loaded with `allow_pickle=False`);
* not the source agent's `act` extras (e.g. DreamerV3's stored latents): they belong to the source's networks.
  The new agent's extras start at zero, which DreamerV3's replay context reads like an episode start (the
  RSSM's initial latent is zero) until an update writes the refreshed latents back;
* source lane i goes to lane i mod (new run's workers), lanes appended in order. A lane's first step is
  marked `is_first` (eviction may have cut it mid-episode) and its last `is_last` (the source stopped
  mid-episode: a truncation, as for a crashed worker), so no window joins two unrelated episodes unmarked.

The source's observation and action spaces (recorded in its manifest) must equal the new task's; otherwise
the run stops before writing anything with one line naming both.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from bench import config as config_lib
from bench import results
from bench.checkpoint import Checkpointer, CheckpointError
from bench.replay import Table
from bench.spaces import PRIVATE_PREFIX, Space, to_json


class ReplaySourceError(ValueError):
    """The run given to `replay.load` cannot be used; the message names it and the problem."""


@dataclasses.dataclass(frozen=True)
class ReplaySource:
    folder: Path
    manifest: dict
    config: dict
    header: dict

    def record(self) -> dict:
        """What the new run's manifest records about its source (`replay_source`)."""
        m = self.manifest
        return {"folder": str(self.folder), "config_hash": m["config_hash"], "agent": m["agent"],
                "suite": m["suite"], "task": m["task"], "seed": m["seed"], "status": m["status"],
                "agent_steps": self.header["step"]}  # fmt: skip


def spaces_record(obs_space: Mapping[str, Space], act_space: Mapping[str, Space]) -> dict:
    """The spaces as the manifest records them (`spaces`), JSON-plain."""
    return json.loads(json.dumps({"obs": to_json(obs_space), "act": to_json(act_space)}))


def open_source(folder) -> ReplaySource:
    """Read and verify the source run folder (manifest, config, checkpoint checksums)."""
    folder = Path(folder).expanduser().resolve()
    if not (folder / "manifest.json").is_file():
        raise ReplaySourceError(f"replay.load: {folder} is not a run folder (no manifest.json)")
    manifest = results.read_manifest(folder)
    if "spaces" not in manifest:
        raise ReplaySourceError(f"replay.load: {folder} records no observation/action spaces (written by an older bench)")
    try:
        header = Checkpointer(folder / "ckpt").load_header()
    except CheckpointError as error:
        raise ReplaySourceError(f"replay.load: {folder} has no usable checkpoint ({error})") from None
    if not header.get("replay") or "main" not in header["replay"]["tables"]:
        raise ReplaySourceError(f"replay.load: the checkpoint of {folder} holds no replay")
    return ReplaySource(folder, manifest, config_lib.load_yaml(folder / "config.yaml"), header)


def check_spaces(source: ReplaySource, obs_space: Mapping[str, Space], act_space: Mapping[str, Space]) -> None:
    ours = spaces_record(obs_space, act_space)
    for kind, name in (("obs", "observation"), ("act", "action")):
        theirs = source.manifest["spaces"][kind]
        if theirs != ours[kind]:
            differing = sorted(k for k in set(theirs) | set(ours[kind]) if theirs.get(k) != ours[kind].get(k))
            raise ReplaySourceError(
                f"replay.load: {source.folder} ({source.manifest['suite']}/{source.manifest['task']}) has another "
                f"{name} space than this run (differs at {', '.join(differing)}: {theirs.get(differing[0])} vs "
                f"{ours[kind].get(differing[0])})"
            )


def read_main_table(source: ReplaySource) -> Table:
    """The source's main replay table as its checkpoint holds it."""
    state = source.header["replay"]
    table_state = state["tables"]["main"]
    chunks = [entry for entry in state["chunks"] if entry["table"] == "main"]
    chunk = int(source.config.get("replay", {}).get("chunk", 1024))
    stored = Table("main", workers=len(table_state["count"]), capacity=max(sum(table_state["count"]), chunk),
                   chunk=chunk)  # fmt: skip
    stored.load(source.folder / "ckpt" / "replay", {**table_state, "chunks": chunks})
    return stored


def load_into(source: ReplaySource, table: Table, row_example: Mapping[str, np.ndarray]) -> int:
    """Copy the source's main-table steps into `table`; `row_example` maps every key of the new run's rows
    to one step's value (observation and action keys are taken from the source, the rest start at zero).
    Returns the number of steps copied."""
    stored = read_main_table(source)
    copied = 0
    for lane in range(stored.workers):
        steps = stored.lane_steps(lane)
        if not steps:
            continue
        count = len(steps["is_first"])
        missing = [k for k in source.manifest["spaces"]["obs"] if not k.startswith(PRIVATE_PREFIX) and k not in steps]
        if missing:
            raise ReplaySourceError(f"replay.load: the replay of {source.folder} lacks the keys {missing}")
        columns = {}
        for key, example in row_example.items():
            if key in source.manifest["spaces"]["obs"] or key in source.manifest["spaces"]["act"]:
                columns[key] = steps[key].astype(np.asarray(example).dtype, copy=True)
            else:
                columns[key] = np.zeros((count, *np.shape(example)), np.asarray(example).dtype)
        columns["is_first"][0] = True
        columns["is_last"][-1] = True
        target = lane % table.workers
        for t in range(count):
            table.add(target, {k: v[t] for k, v in columns.items()})
        copied += count
    return copied
