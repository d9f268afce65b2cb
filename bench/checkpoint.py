"""Checkpoints: a JSON header, the agent state via `eqx.tree_serialise_leaves`, and the replay. No pickle.

Layout inside a run folder:

    ckpt/LATEST                 name of the current header (written atomically last: the commit point)
    ckpt/PREVIOUS               name of the checkpoint committed before it (kept as a fallback)
    ckpt/header-<step>.json     counters, RNG states, worker episodes, file positions, replay state, and the
                                sha256 of every file the checkpoint consists of
    ckpt/agent-<step>.eqx       (agent state, policy carry) serialised leaves
    ckpt/replay/*.npz           replay chunks (shared between checkpoints; unreferenced ones are deleted)

A save never changes a file of a committed checkpoint: its files get fresh names (`<step>-<n>` when a
checkpoint of the same step exists). Every file it wrote and both folders are fsynced before LATEST names
the new header, and LATEST's folder after, so a kill or a power cut at any point leaves a committed
checkpoint intact. The two latest committed checkpoints are kept; older ones are deleted after the commit.

Loading verifies every checksum before anything is touched. If the latest checkpoint is unusable (a file
missing or corrupted) and the previous one verifies, the previous one is loaded with a warning; otherwise
it fails with `CheckpointError`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import equinox as eqx

from bench.replay import Replay, file_sha256
from bench.results import atomic_write_json, atomic_write_text, fsync_dir, fsync_file

FORMAT = 1
HEADER_NAME = re.compile(r"header-\d{12}(-\d+)?\.json")


class CheckpointError(RuntimeError):
    pass


class Checkpointer:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.replay_folder = self.folder / "replay"
        self.checksums: dict[str, str] = {}  # replay file -> sha256, of files already on disk
        self.current: str | None = None  # header name of the checkpoint saved or loaded last
        self.notice: str | None = None  # set when loading fell back to the previous checkpoint

    def exists(self) -> bool:
        return (self.folder / "LATEST").exists()

    # --------------------------------------------------------------------------------------------- save

    def save(self, *, step: int, header: dict, agent_tree, replay: Replay | None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        previous = self.current or self._pointer("LATEST", missing_ok=True, strict=False)
        name = self._fresh_name(step)
        agent_file = self.folder / f"agent-{name}.eqx"
        temporary = agent_file.with_name(agent_file.name + ".tmp")
        eqx.tree_serialise_leaves(temporary, agent_tree)
        fsync_file(temporary)
        temporary.replace(agent_file)
        files = {agent_file.name: file_sha256(agent_file)}
        replay_state = None
        if replay is not None:
            known = dict(self.checksums)
            replay_state = replay.save(self.replay_folder, self.checksums)
            for file, digest in self.checksums.items():
                if known.get(file) != digest:  # written by this save
                    fsync_file(self.replay_folder / file)
            fsync_dir(self.replay_folder)
            for entry in replay_state["chunks"]:
                for kind in ("obs", "back"):
                    if kind in entry:
                        files[f"replay/{entry[kind]}"] = self.checksums[entry[kind]]
        header = {**header, "format": FORMAT, "step": step, "files": files, "replay": replay_state}
        header_name = f"header-{name}.json"
        atomic_write_json(self.folder / header_name, header)  # fsyncs the file
        fsync_dir(self.folder)  # the agent file's and the header's names are on disk before the commit
        if previous:
            atomic_write_text(self.folder / "PREVIOUS", f"{previous}\n")
        atomic_write_text(self.folder / "LATEST", f"{header_name}\n")  # the commit
        fsync_dir(self.folder)
        self.current = header_name
        self._collect_garbage({header_name: files, **self._files_of(previous)})

    def _fresh_name(self, step: int) -> str:
        """`<step>`, or `<step>-<n>` if a checkpoint (committed or not) of that step exists already."""
        base, suffix = f"{step:012d}", 0
        name = base
        while (self.folder / f"header-{name}.json").exists() or (self.folder / f"agent-{name}.eqx").exists():
            suffix += 1
            name = f"{base}-{suffix}"
        return name

    def _files_of(self, header_name: str | None) -> dict[str, dict]:
        """{header name: its files} of a kept checkpoint, or {} if it cannot be read (then it is not kept)."""
        if not header_name:
            return {}
        try:
            files = json.loads((self.folder / header_name).read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return {}
        return {header_name: files} if isinstance(files, dict) else {}

    def _collect_garbage(self, kept: dict[str, dict]) -> None:
        """Delete every file that no kept checkpoint (header name -> its files) consists of."""
        keep = {"LATEST", "PREVIOUS", "replay", *kept, *(name for files in kept.values() for name in files)}
        if len(kept) < 2:
            (self.folder / "PREVIOUS").unlink(missing_ok=True)
        for path in self.folder.iterdir():
            if path.name not in keep and path.is_file():
                path.unlink()
        if self.replay_folder.exists():
            referenced = {name.split("/", 1)[1] for name in keep if name.startswith("replay/")}
            for path in self.replay_folder.iterdir():
                if path.name not in referenced:
                    path.unlink()
                    self.checksums.pop(path.name, None)

    # --------------------------------------------------------------------------------------------- load

    def _pointer(self, name: str, *, missing_ok: bool = False, strict: bool = True) -> str | None:
        """The header name a pointer file (LATEST, PREVIOUS) holds; garbage raises (strict) or gives None."""
        path = self.folder / name
        try:
            text = path.read_bytes().decode("utf-8", errors="replace").strip()
        except FileNotFoundError:
            if missing_ok:
                return None
            raise CheckpointError(f"checkpoint pointer {path} is missing") from None
        if HEADER_NAME.fullmatch(text):
            return text
        if not strict:
            return None
        problem = "is empty" if not text else f"does not name a checkpoint header (it holds {text[:40]!r})"
        raise CheckpointError(f"checkpoint pointer {path} {problem}; the checkpoint cannot be found")

    def load_header(self) -> dict:
        """Read and verify the latest checkpoint (or, if it is unusable, the previous one); raise
        CheckpointError naming the problem."""
        latest = self._pointer("LATEST")
        try:
            header = self._verified(latest)
        except CheckpointError as error:
            previous = self._pointer("PREVIOUS", missing_ok=True, strict=False)
            if previous is None or previous == latest:
                raise
            try:
                header = self._verified(previous)
            except CheckpointError:
                raise error from None
            self.notice = f"the latest checkpoint is unusable ({error}); resuming from the previous one, {previous}"
            print(f"warning: {self.notice}", file=sys.stderr, flush=True)
            latest = previous
        self.current = latest
        return header

    def _verified(self, name: str) -> dict:
        path = self.folder / name
        try:
            header = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint header {path} is missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointError(f"checkpoint header {path} is corrupted ({error})") from None
        if not isinstance(header, dict) or not isinstance(header.get("files"), dict):
            raise CheckpointError(f"checkpoint header {path} is corrupted (no file list)")
        if header.get("format") != FORMAT:
            raise CheckpointError(f"checkpoint {path} has format {header.get('format')}, expected {FORMAT}")
        checksums = {}
        for relative, expected in header["files"].items():
            file = self.folder / relative
            if not file.exists():
                raise CheckpointError(f"checkpoint file {file} is missing")
            actual = file_sha256(file)
            if actual != expected:
                raise CheckpointError(f"checkpoint file {file} is corrupted (sha256 {actual[:12]}… != {expected[:12]}…)")
            if relative.startswith("replay/"):
                checksums[relative.split("/", 1)[1]] = expected
        self.checksums = checksums
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
