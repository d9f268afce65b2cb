"""Replay: chunked per-stream storage with bounded memory, sequence sampling and persistence.

* Each env worker writes one *stream*. Step `t` of a stream holds the observation at t (with the reward
  and flags that came with it), the action the agent chose at that observation, and the agent's `extras`
  (e.g. its latent state, for replay context).
* Storage is in chunks of `chunk` steps per stream. When the stored steps exceed `capacity`, the oldest
  chunk of the fullest stream is evicted: memory stays bounded by capacity + one chunk per stream.
* A sampled item is a window of `length` consecutive steps of one stream (windows may cross episode
  boundaries; `is_first` tells the agent to reset). Selectors:
    - online queue: every fresh, non-overlapping window is trained on once, first (DreamerV3's `online`);
    - uniform over all valid windows;
    - recency (fraction `recency`): window age drawn with weight exp(-recency_decay * age).
* `write_back` stores the agent's refreshed per-step values (e.g. latents) at the sampled positions.
* `save`/`load` write chunks as .npz files (no pickle). Observation chunks never change once full, so they
  are written once; chunks with written-back values are rewritten only when changed since the last save.

Randomness comes from a numpy Generator whose state is saved with the replay.
"""

from __future__ import annotations

import collections
import hashlib
import math
from pathlib import Path

import numpy as np


class Chunk:
    def __init__(self, size: int, example: dict[str, np.ndarray]):
        self.data = {k: np.zeros((size, *v.shape), v.dtype) for k, v in example.items()}
        self.filled = 0
        self.saved_filled = -1  # fill count of the last saved observation file
        self.dirty_back = False  # written-back values changed since the last save
        self.back_keys: set[str] = set()
        self.back_version = 0


class Replay:
    def __init__(
        self,
        *,
        num_streams: int,
        capacity: int = 1_000_000,
        chunk: int = 1024,
        online: bool = True,
        recency: float = 0.0,
        recency_decay: float = 1e-4,
        seed: int = 0,
    ):
        if chunk < 1 or capacity < chunk:
            raise ValueError(f"replay needs capacity ({capacity}) >= chunk ({chunk}) >= 1")
        self.num_streams = num_streams
        self.capacity = capacity
        self.chunk = chunk
        self.online = online
        self.recency = recency
        self.recency_decay = recency_decay
        self.rng = np.random.default_rng(seed)
        self.chunks: list[dict[int, Chunk]] = [{} for _ in range(num_streams)]
        self.count = [0] * num_streams  # steps ever added per stream
        self.first = [0] * num_streams  # first retained step per stream (multiple of chunk)
        self.online_length = 0  # window length of the online queue (set on first sample)
        self.online_next = [0] * num_streams
        self.online_queue: collections.deque[tuple[int, int]] = collections.deque()
        self.keys: tuple[str, ...] | None = None

    # ------------------------------------------------------------------------------------------ adding

    def __len__(self) -> int:
        return sum(c - f for c, f in zip(self.count, self.first))

    def add(self, stream: int, step: dict[str, np.ndarray]) -> None:
        step = {k: np.asarray(v) for k, v in step.items()}
        if self.keys is None:
            self.keys = tuple(sorted(step))
        elif tuple(sorted(step)) != self.keys:
            raise ValueError(f"replay step keys {sorted(step)} differ from the stored keys {list(self.keys)}")
        t = self.count[stream]
        index, offset = divmod(t, self.chunk)
        chunks = self.chunks[stream]
        if index not in chunks:
            chunks[index] = Chunk(self.chunk, step)
        target = chunks[index]
        for key, value in step.items():
            target.data[key][offset] = value
        target.filled = offset + 1
        self.count[stream] = t + 1
        if self.online_length:
            self._enqueue_online(stream)
        self._evict()

    def add_batch(self, steps: dict[str, np.ndarray]) -> None:
        """One step for every stream: arrays shaped (num_streams, ...)."""
        for stream in range(self.num_streams):
            self.add(stream, {k: v[stream] for k, v in steps.items()})

    def _enqueue_online(self, stream: int) -> None:
        length = self.online_length
        while self.count[stream] - self.online_next[stream] >= length:
            self.online_queue.append((stream, self.online_next[stream]))
            self.online_next[stream] += length

    def _evict(self) -> None:
        while len(self) > self.capacity:
            stream = int(np.argmax([c - f for c, f in zip(self.count, self.first)]))
            del self.chunks[stream][self.first[stream] // self.chunk]
            self.first[stream] += self.chunk
        if self.online_queue and any(start < self.first[s] for s, start in self.online_queue):
            self.online_queue = collections.deque((s, t) for s, t in self.online_queue if t >= self.first[s])

    # ---------------------------------------------------------------------------------------- sampling

    def _valid_counts(self, length: int) -> np.ndarray:
        return np.array([max(0, c - f - length + 1) for c, f in zip(self.count, self.first)])

    def ready(self, length: int) -> bool:
        return self._valid_counts(length).sum() > 0

    def sample(
        self, batch: int, length: int, *, rng: np.random.Generator | None = None, online: bool = True
    ) -> tuple[dict[str, np.ndarray], list[tuple[int, int]]]:
        """`batch` windows of `length` steps: (dict of (batch, length, ...) arrays, [(stream, start)]).

        Training samples use the replay's own generator and the online queue; diagnostics (reports) pass
        their own `rng` and `online=False` so they never change what training sees.
        """
        use_online = self.online and online
        rng = self.rng if rng is None else rng
        if use_online and self.online_length != length:
            # the online queue starts with the first request; windows from then on are queued
            self.online_length = length
            self.online_next = list(self.count)
            self.online_queue.clear()
        counts = self._valid_counts(length)
        if counts.sum() == 0:
            raise ValueError(f"replay holds no window of {length} steps yet ({len(self)} steps stored)")
        positions: list[tuple[int, int]] = []
        while use_online and self.online_queue and len(positions) < batch:
            positions.append(self.online_queue.popleft())
        probs = counts / counts.sum()
        for _ in range(batch - len(positions)):
            stream = int(rng.choice(self.num_streams, p=probs))
            newest = self.count[stream] - length  # newest valid start
            if self.recency > 0 and rng.random() < self.recency:
                age = self._recency_age(counts[stream], rng)
            else:
                age = int(rng.integers(counts[stream]))
            positions.append((stream, newest - age))
        return self._gather(positions, length), positions

    def _recency_age(self, count: int, rng: np.random.Generator) -> int:
        """Age in [0, count) with density proportional to exp(-decay * age) (inverse CDF)."""
        decay = self.recency_decay
        if decay * count < 1e-9:
            return int(rng.integers(count))
        u = rng.random()
        age = -math.log1p(-u * (1.0 - math.exp(-decay * count))) / decay
        return min(int(age), count - 1)

    def _gather(self, positions, length) -> dict[str, np.ndarray]:
        out = {}
        for key in self.keys:
            example = next(iter(self.chunks[positions[0][0]].values())).data[key]
            out[key] = np.empty((len(positions), length, *example.shape[1:]), example.dtype)
        for row, (stream, start) in enumerate(positions):
            for piece_start, chunk, lo, hi in self._pieces(stream, start, length):
                for key in self.keys:
                    out[key][row, piece_start : piece_start + hi - lo] = chunk.data[key][lo:hi]
        return out

    def _pieces(self, stream, start, length):
        """(offset in window, chunk, lo, hi) slices covering steps [start, start + length) of a stream."""
        t, end = start, start + length
        while t < end:
            index, lo = divmod(t, self.chunk)
            hi = min(self.chunk, lo + end - t)
            yield t - start, self.chunks[stream][index], lo, hi
            t += hi - lo

    def write_back(self, positions, updates: dict[str, np.ndarray]) -> None:
        """Store per-step values (batch, length, ...) at sampled positions; evicted steps are skipped."""
        if not updates:
            return
        length = next(iter(updates.values())).shape[1]
        for row, (stream, start) in enumerate(positions):
            if start < self.first[stream]:
                continue
            for piece_start, chunk, lo, hi in self._pieces(stream, start, length):
                for key, value in updates.items():
                    if key not in chunk.data:
                        raise KeyError(f"replay write_back: unknown key {key!r} (stored: {list(self.keys)})")
                    chunk.data[key][lo:hi] = value[row, piece_start : piece_start + hi - lo]
                    chunk.back_keys.add(key)
                chunk.dirty_back = True

    # ------------------------------------------------------------------------------------- persistence

    def save(self, folder: Path, checksums: dict[str, str]) -> dict:
        """Write changed chunks into `folder`; return the JSON state that names every file of this save.

        `checksums` maps file names to sha256 and is updated in place (files already written keep theirs).
        """
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for stream, chunks in enumerate(self.chunks):
            for index, chunk in sorted(chunks.items()):
                obs_name = f"s{stream}_c{index}_n{chunk.filled}.npz"
                if chunk.saved_filled != chunk.filled or obs_name not in checksums:
                    obs_keys = [k for k in self.keys if k not in chunk.back_keys]
                    checksums[obs_name] = _save_npz(folder / obs_name, chunk, obs_keys)
                    chunk.saved_filled = chunk.filled
                entry = {"stream": stream, "index": index, "filled": chunk.filled, "obs": obs_name}
                if chunk.back_keys:
                    back_name = f"s{stream}_c{index}_back_v{chunk.back_version}.npz"
                    if chunk.dirty_back or back_name not in checksums:
                        chunk.back_version += 1
                        back_name = f"s{stream}_c{index}_back_v{chunk.back_version}.npz"
                        checksums[back_name] = _save_npz(folder / back_name, chunk, sorted(chunk.back_keys))
                        chunk.dirty_back = False
                    entry["back"] = back_name
                files.append(entry)
        return {
            "keys": list(self.keys or ()),
            "count": self.count,
            "first": self.first,
            "online_length": self.online_length,
            "online_next": self.online_next,
            "online_queue": [list(item) for item in self.online_queue],
            "rng": _json_rng_state(self.rng),
            "chunks": files,
        }

    def load(self, folder: Path, state: dict) -> None:
        """Restore from `save`'s state (files must have been checksum-verified by the caller)."""
        self.keys = tuple(state["keys"]) or None
        self.count = list(state["count"])
        self.first = list(state["first"])
        self.online_length = state["online_length"]
        self.online_next = list(state["online_next"])
        self.online_queue = collections.deque(tuple(item) for item in state["online_queue"])
        self.rng.bit_generator.state = state["rng"]
        self.chunks = [{} for _ in range(self.num_streams)]
        for entry in state["chunks"]:
            arrays = dict(_load_npz(folder / entry["obs"]))
            back_keys = set()
            if "back" in entry:
                back = _load_npz(folder / entry["back"])
                back_keys = set(back)
                arrays.update(back)
            chunk = Chunk(self.chunk, {k: v[0] for k, v in arrays.items()})
            for key, value in arrays.items():
                chunk.data[key][: len(value)] = value
            chunk.filled = entry["filled"]
            chunk.saved_filled = entry["filled"]
            chunk.back_keys = back_keys
            chunk.back_version = int(entry["back"].rsplit("_v", 1)[1][:-4]) if "back" in entry else 0
            self.chunks[entry["stream"]][entry["index"]] = chunk


def _save_npz(path: Path, chunk: Chunk, keys) -> str:
    arrays = {key: chunk.data[key][: chunk.filled] if key not in chunk.back_keys else chunk.data[key] for key in keys}
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        np.savez(file, **arrays)
    temporary.replace(path)
    return file_sha256(path)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_rng_state(rng: np.random.Generator) -> dict:
    state = rng.bit_generator.state
    return {"bit_generator": state["bit_generator"], "state": dict(state["state"]), **{
        k: v for k, v in state.items() if k not in ("bit_generator", "state")}}
