"""Replay: named tables of chunked per-worker storage, pluggable samplers, one online queue per training stream.

* A *table* stores steps written by the env workers: worker `w` appends to its own lane. Step `t` of a lane
  holds the observation at t (with the reward and flags that came with it), the action the agent chose at that
  observation, and the agent's `extras` (e.g. its latent state, for replay context). Table "main" gets every
  step; an agent may write further tables from its `act` extras (see `bench.api.StreamSpec`).
* Storage is in chunks of `chunk` steps per lane. When a table's stored steps exceed `capacity`, the oldest
  chunk of the fullest lane is evicted: memory stays bounded by capacity + one chunk per lane.
* A sampled item is a window of `length` consecutive steps of one lane (windows may cross episode
  boundaries; `is_first` tells the agent to reset). The lane is drawn in proportion to its valid windows, then
  the window's age (0 = newest) by the stream's *sampler*, a function registered by name in `SAMPLERS`
  (`register_sampler`): "uniform", "recency" (weight exp(-recency_decay * age)) and "mixture" (recency with
  probability `recency`, else uniform; DreamerV3's default with recency 0). Each training stream may also
  have an *online queue*: every fresh, non-overlapping window is trained on once, first (DreamerV3's `online`).
* `write_back` stores the agent's refreshed per-step values (e.g. latents) at the sampled positions.
* `save`/`load` write chunks as .npz files (no pickle). Observation chunks never change once full, so they
  are written once; chunks with written-back values are rewritten only when changed since the last save.

Randomness comes from one numpy Generator per table whose state is saved with the replay.
"""

from __future__ import annotations

import collections
import hashlib
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

Sampler = Callable[[np.random.Generator, int], int]
"""(rng, number of valid windows in the lane) -> age of the sampled window in [0, count); 0 is the newest."""

SAMPLERS: dict[str, Callable[..., Sampler]] = {}


def register_sampler(name: str, factory: Callable[..., Sampler]) -> None:
    """Register `factory(replay_config) -> Sampler` under `name` (a StreamSpec's `sampler`)."""
    if name in SAMPLERS and SAMPLERS[name] is not factory:
        raise ValueError(f"replay sampler {name!r} is already registered")
    SAMPLERS[name] = factory


def make_sampler(name: str, config) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown replay sampler {name!r}; registered: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name](config)


def uniform_age(rng: np.random.Generator, count: int) -> int:
    return int(rng.integers(count))


def recency_age(rng: np.random.Generator, count: int, decay: float) -> int:
    """Age in [0, count) with density proportional to exp(-decay * age) (inverse CDF)."""
    if decay * count < 1e-9:
        return int(rng.integers(count))
    u = rng.random()
    age = -math.log1p(-u * (1.0 - math.exp(-decay * count))) / decay
    return min(int(age), count - 1)


def _mixture(config) -> Sampler:
    fraction, decay = config.recency, config.recency_decay

    def sample(rng, count):
        if fraction > 0 and rng.random() < fraction:
            return recency_age(rng, count, decay)
        return uniform_age(rng, count)

    return sample


register_sampler("uniform", lambda config: uniform_age)
register_sampler("recency", lambda config: lambda rng, count: recency_age(rng, count, config.recency_decay))
register_sampler("mixture", _mixture)


class Chunk:
    def __init__(self, size: int, example: dict[str, np.ndarray]):
        self.data = {k: np.zeros((size, *v.shape), v.dtype) for k, v in example.items()}
        self.filled = 0
        self.saved_filled = -1  # fill count of the last saved observation file
        self.dirty_back = False  # written-back values changed since the last save
        self.back_keys: set[str] = set()
        self.back_version = 0


class OnlineQueue:
    """Fresh non-overlapping windows of `length` steps, each handed out once (one queue per training stream).

    It starts at its stream's first sample: windows that complete from then on are queued, per lane in order.
    """

    def __init__(self, length: int, next_start: list[int]):
        self.length = length
        self.next = list(next_start)
        self.items: collections.deque[tuple[int, int]] = collections.deque()

    def enqueue(self, lane: int, count: int) -> None:
        while count - self.next[lane] >= self.length:
            self.items.append((lane, self.next[lane]))
            self.next[lane] += self.length

    def drop_before(self, first: list[int]) -> None:
        if any(start < first[lane] for lane, start in self.items):
            self.items = collections.deque((lane, t) for lane, t in self.items if t >= first[lane])

    def state(self) -> dict:
        return {"length": self.length, "next": self.next, "items": [list(item) for item in self.items]}

    @classmethod
    def from_state(cls, state: dict) -> OnlineQueue:
        queue = cls(state["length"], state["next"])
        queue.items = collections.deque(tuple(item) for item in state["items"])
        return queue


class Table:
    """One replay table: a lane per env worker, chunked, bounded by `capacity` steps."""

    def __init__(self, name: str, *, workers: int, capacity: int = 1_000_000, chunk: int = 1024, seed: int = 0):
        if chunk < 1 or capacity < chunk:
            raise ValueError(f"replay table {name!r} needs capacity ({capacity}) >= chunk ({chunk}) >= 1")
        self.name = name
        self.workers = workers
        self.capacity = capacity
        self.chunk = chunk
        self.rng = np.random.default_rng(seed)
        self.chunks: list[dict[int, Chunk]] = [{} for _ in range(workers)]
        self.count = [0] * workers  # steps ever added per lane
        self.first = [0] * workers  # first retained step per lane (multiple of chunk)
        self.queues: dict[str, OnlineQueue] = {}  # by training stream
        self.keys: tuple[str, ...] | None = None

    # ------------------------------------------------------------------------------------------ adding

    def __len__(self) -> int:
        return sum(c - f for c, f in zip(self.count, self.first))

    def add(self, lane: int, step: dict[str, np.ndarray]) -> None:
        lane = int(lane)  # a numpy lane (the runner's np.flatnonzero) would reach the queues and their JSON state
        step = {k: np.asarray(v) for k, v in step.items()}
        if self.keys is None:
            self.keys = tuple(sorted(step))
        elif tuple(sorted(step)) != self.keys:
            raise ValueError(
                f"replay table {self.name!r}: step keys {sorted(step)} differ from the stored keys {list(self.keys)}"
            )
        t = self.count[lane]
        index, offset = divmod(t, self.chunk)
        chunks = self.chunks[lane]
        if index not in chunks:
            chunks[index] = Chunk(self.chunk, step)
        target = chunks[index]
        for key, value in step.items():
            target.data[key][offset] = value
        target.filled = offset + 1
        self.count[lane] = t + 1
        for queue in self.queues.values():
            queue.enqueue(lane, self.count[lane])
        self._evict()

    def add_batch(self, steps: dict[str, np.ndarray], lanes=None) -> None:
        """One step for each lane in `lanes` (default all): arrays shaped (workers, ...)."""
        for lane in range(self.workers) if lanes is None else lanes:
            self.add(lane, {k: v[lane] for k, v in steps.items()})

    def mark_last(self, lane: int) -> None:
        """Flag the lane's newest step as the end of its episode (an episode its crashed worker abandoned)."""
        t = self.count[lane] - 1
        if t < self.first[lane] or self.keys is None or "is_last" not in self.keys:
            return
        index, offset = divmod(t, self.chunk)
        chunk = self.chunks[lane][index]
        chunk.data["is_last"][offset] = True
        chunk.saved_filled = -1  # rewrite this chunk's observation file at the next save

    def _evict(self) -> None:
        while len(self) > self.capacity:
            lane = int(np.argmax([c - f for c, f in zip(self.count, self.first)]))
            del self.chunks[lane][self.first[lane] // self.chunk]
            self.first[lane] += self.chunk
        for queue in self.queues.values():
            queue.drop_before(self.first)

    # ---------------------------------------------------------------------------------------- sampling

    def _valid_counts(self, length: int) -> np.ndarray:
        return np.array([max(0, c - f - length + 1) for c, f in zip(self.count, self.first)])

    def ready(self, length: int) -> bool:
        return self._valid_counts(length).sum() > 0

    def sample(
        self,
        batch: int,
        length: int,
        *,
        sampler: Sampler = uniform_age,
        stream: str | None = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[dict[str, np.ndarray], list[tuple[int, int]]]:
        """`batch` windows of `length` steps: (dict of (batch, length, ...) arrays, [(lane, start)]).

        With `stream`, that stream's online queue is served first (created at its first call). Training
        samples use the table's own generator; diagnostics (reports) pass their own `rng` and no stream, so
        they never change what training sees.
        """
        rng = self.rng if rng is None else rng
        queue = None
        if stream is not None:
            queue = self.queues.get(stream)
            if queue is None or queue.length != length:
                queue = self.queues[stream] = OnlineQueue(length, self.count)
        counts = self._valid_counts(length)
        if counts.sum() == 0:
            raise ValueError(
                f"replay table {self.name!r} holds no window of {length} steps yet ({len(self)} steps stored)"
            )
        positions: list[tuple[int, int]] = []
        while queue is not None and queue.items and len(positions) < batch:
            positions.append(queue.items.popleft())
        probs = counts / counts.sum()
        for _ in range(batch - len(positions)):
            lane = int(rng.choice(self.workers, p=probs))
            age = sampler(rng, int(counts[lane]))
            if not 0 <= age < counts[lane]:
                raise ValueError(f"replay sampler returned age {age} outside [0, {counts[lane]})")
            positions.append((lane, self.count[lane] - length - age))
        return self._gather(positions, length), positions

    def lane_steps(self, lane: int) -> dict[str, np.ndarray]:
        """Every retained step of one lane, oldest first, as {key: (steps, ...)} ({} for an empty lane)."""
        steps = self.count[lane] - self.first[lane]
        if steps == 0 or self.keys is None:
            return {}
        return {key: value[0] for key, value in self._gather([(lane, self.first[lane])], steps).items()}

    def _gather(self, positions, length) -> dict[str, np.ndarray]:
        out = {}
        for key in self.keys:
            example = next(iter(self.chunks[positions[0][0]].values())).data[key]
            out[key] = np.empty((len(positions), length, *example.shape[1:]), example.dtype)
        for row, (lane, start) in enumerate(positions):
            for piece_start, chunk, lo, hi in self._pieces(lane, start, length):
                for key in self.keys:
                    out[key][row, piece_start : piece_start + hi - lo] = chunk.data[key][lo:hi]
        return out

    def _pieces(self, lane, start, length):
        """(offset in window, chunk, lo, hi) slices covering steps [start, start + length) of a lane."""
        t, end = start, start + length
        while t < end:
            index, lo = divmod(t, self.chunk)
            hi = min(self.chunk, lo + end - t)
            yield t - start, self.chunks[lane][index], lo, hi
            t += hi - lo

    def write_back(self, positions, updates: dict[str, np.ndarray]) -> None:
        """Store per-step values (batch, length, ...) at sampled positions; evicted steps are skipped."""
        if not updates:
            return
        length = next(iter(updates.values())).shape[1]
        for row, (lane, start) in enumerate(positions):
            if start < self.first[lane]:
                continue
            for piece_start, chunk, lo, hi in self._pieces(lane, start, length):
                for key, value in updates.items():
                    if key not in chunk.data:
                        raise KeyError(
                            f"replay table {self.name!r} write_back: unknown key {key!r} (stored: {list(self.keys)})"
                        )
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
        for lane, chunks in enumerate(self.chunks):
            for index, chunk in sorted(chunks.items()):
                prefix = f"{self.name}_w{lane}_c{index}"
                obs_name = f"{prefix}_n{chunk.filled}.npz"
                if chunk.saved_filled != chunk.filled or obs_name not in checksums:
                    obs_keys = [k for k in self.keys if k not in chunk.back_keys]
                    checksums[obs_name] = _save_npz(folder / obs_name, chunk, obs_keys)
                    chunk.saved_filled = chunk.filled
                entry = {"table": self.name, "lane": lane, "index": index, "filled": chunk.filled, "obs": obs_name}
                if chunk.back_keys:
                    back_name = f"{prefix}_back_v{chunk.back_version}.npz"
                    if chunk.dirty_back or back_name not in checksums:
                        chunk.back_version += 1
                        back_name = f"{prefix}_back_v{chunk.back_version}.npz"
                        checksums[back_name] = _save_npz(folder / back_name, chunk, sorted(chunk.back_keys))
                        chunk.dirty_back = False
                    entry["back"] = back_name
                files.append(entry)
        return {
            "keys": list(self.keys or ()),
            "count": self.count,
            "first": self.first,
            "queues": {name: queue.state() for name, queue in sorted(self.queues.items())},
            "rng": _json_rng_state(self.rng),
            "chunks": files,
        }

    def load(self, folder: Path, state: dict) -> None:
        """Restore from `save`'s state (files must have been checksum-verified by the caller)."""
        self.keys = tuple(state["keys"]) or None
        self.count = list(state["count"])
        self.first = list(state["first"])
        self.queues = {name: OnlineQueue.from_state(q) for name, q in state["queues"].items()}
        self.rng.bit_generator.state = state["rng"]
        self.chunks = [{} for _ in range(self.workers)]
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
            self.chunks[entry["lane"]][entry["index"]] = chunk


class Replay:
    """The run's replay tables by name ("main" first), saved and restored together."""

    def __init__(self, tables: Mapping[str, Table]):
        self.tables = dict(tables)

    def __getitem__(self, name: str) -> Table:
        return self.tables[name]

    def __len__(self) -> int:
        return sum(len(table) for table in self.tables.values())

    def save(self, folder: Path, checksums: dict[str, str]) -> dict:
        """All tables' states; `chunks` lists every file of every table (what a checkpoint verifies)."""
        states = {name: table.save(folder, checksums) for name, table in self.tables.items()}
        chunks = [entry for state in states.values() for entry in state.pop("chunks")]
        return {"tables": states, "chunks": chunks}

    def load(self, folder: Path, state: dict) -> None:
        if sorted(state["tables"]) != sorted(self.tables):
            raise ValueError(f"checkpoint replay tables {sorted(state['tables'])} != the agent's {sorted(self.tables)}")
        for name, table in self.tables.items():
            chunks = [entry for entry in state["chunks"] if entry["table"] == name]
            table.load(folder, {**state["tables"][name], "chunks": chunks})


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
