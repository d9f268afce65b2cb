"""Checkpoints: a JSON header, the agent state via `eqx.tree_serialise_leaves`, and the replay. No pickle.

Layout inside a run folder:

    ckpt/LATEST                 name of the current header (written atomically last: the commit point)
    ckpt/header-<step>.json     counters, RNG states, worker episodes, file positions, replay state, and the
                                sha256 of every file the checkpoint consists of
    ckpt/agent-<step>.eqx       (agent state, policy carry) serialised leaves
    ckpt/replay/*.npz           replay chunks (shared between checkpoints; unreferenced ones are deleted)

A checkpoint is valid only once LATEST names it, so a kill at any point leaves the previous one intact.
Loading verifies every checksum before anything is touched and fails with `CheckpointError`.
"""

from __future__ import annotations

import json
from pathlib import Path

import equinox as eqx

from bench.replay import Replay, file_sha256
from bench.results import atomic_write_json, atomic_write_text

FORMAT = 1


class CheckpointError(RuntimeError):
    pass


class Checkpointer:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.replay_folder = self.folder / "replay"
        self.checksums: dict[str, str] = {}  # replay file -> sha256, of files already on disk

    def exists(self) -> bool:
        return (self.folder / "LATEST").exists()

    def save(self, *, step: int, header: dict, agent_tree, replay: Replay | None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{step:012d}"
        agent_file = self.folder / f"agent-{name}.eqx"
        temporary = agent_file.with_name(agent_file.name + ".tmp")
        eqx.tree_serialise_leaves(temporary, agent_tree)
        temporary.replace(agent_file)
        files = {agent_file.name: file_sha256(agent_file)}
        replay_state = None
        if replay is not None:
            replay_state = replay.save(self.replay_folder, self.checksums)
            for entry in replay_state["chunks"]:
                for kind in ("obs", "back"):
                    if kind in entry:
                        files[f"replay/{entry[kind]}"] = self.checksums[entry[kind]]
        header = {**header, "format": FORMAT, "step": step, "files": files, "replay": replay_state}
        atomic_write_json(self.folder / f"header-{name}.json", header)
        atomic_write_text(self.folder / "LATEST", f"header-{name}.json\n")
        self._collect_garbage(keep_header=f"header-{name}.json", files=files)

    def _collect_garbage(self, keep_header: str, files: dict) -> None:
        keep = {keep_header, "LATEST", "replay", *files}
        for path in self.folder.iterdir():
            if path.name not in keep and path.is_file():
                path.unlink()
        if self.replay_folder.exists():
            referenced = {name.split("/", 1)[1] for name in files if name.startswith("replay/")}
            for path in self.replay_folder.iterdir():
                if path.name not in referenced:
                    path.unlink()
                    self.checksums.pop(path.name, None)

    def load_header(self) -> dict:
        """Read and verify the latest checkpoint; raise CheckpointError naming the problem."""
        latest = self.folder / "LATEST"
        name = latest.read_text().strip()
        path = self.folder / name
        try:
            header = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {path} named by {latest} is missing") from None
        except json.JSONDecodeError as error:
            raise CheckpointError(f"checkpoint header {path} is corrupted ({error.msg})") from None
        if header.get("format") != FORMAT:
            raise CheckpointError(f"checkpoint {path} has format {header.get('format')}, expected {FORMAT}")
        for relative, expected in header["files"].items():
            file = self.folder / relative
            if not file.exists():
                raise CheckpointError(f"checkpoint file {file} is missing")
            actual = file_sha256(file)
            if actual != expected:
                raise CheckpointError(f"checkpoint file {file} is corrupted (sha256 {actual[:12]}… != {expected[:12]}…)")
            if relative.startswith("replay/"):
                self.checksums[relative.split("/", 1)[1]] = expected
        return header

    def load_agent(self, header: dict, like):
        agent_file = next(name for name in header["files"] if name.startswith("agent-"))
        try:
            return eqx.tree_deserialise_leaves(self.folder / agent_file, like)
        except Exception as error:  # noqa: BLE001 - a shape/dtype mismatch means the agent changed
            raise CheckpointError(
                f"checkpoint {self.folder / agent_file} does not match the agent's state ({error})"
            ) from None

    def load_replay(self, header: dict, replay: Replay) -> None:
        if header["replay"] is not None:
            replay.load(self.replay_folder, header["replay"])
