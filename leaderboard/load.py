"""Read our run folders and the published reference data into per-method score sets.

Everything read is validated against a schema first; a malformed file raises a `ValueError` that names the
file (and line) and the field. Nothing is executed or unpickled: JSON, JSON lines and YAML (`safe_load`)
only. Run folders follow `bench.results`: `ROOT/<suite>/<task>/<agent>/<config-hash>/seed<N>/`.

A run is reduced to one raw final score under an evaluation protocol:

* `final_eval`    mean episode value of the final evaluation episodes (`mode == "eval"`, `final`),
* `train_window`  mean episode value of the training episodes ending in the last `window` agent steps of the
                  budget, i.e. with `budget - window < step <= budget`,
* `crafter_score` the Crafter score over all training episodes within the budget,
* `success_rate`  mean episode value (success) over all training episodes within the budget.

Broken episodes (an env worker crashed) are excluded and counted. Unfinished runs, runs whose budget is
not the suite's, runs without episodes under the protocol and incomplete folders are skipped and reported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import stat
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import yaml

from leaderboard import normalize
from leaderboard.errors import UnknownNameError
from leaderboard.reference import Reference, references_for

RUN_FILES = ("config.yaml", "manifest.json", "scores.jsonl", "metrics.jsonl")


# ------------------------------------------------------------------------------------------ suites


@dataclasses.dataclass(frozen=True)
class SuiteInfo:
    """What the leaderboard needs about a suite: its scoring table plus the registered spec's settings."""

    scoring: normalize.SuiteScoring
    tasks: tuple[str, ...]
    protocol: str  # the protocol our runs are scored under
    window: int  # agent steps of the train_window protocol
    budget: int  # agent steps; 0 = unknown
    frames_per_step: int
    notes: tuple[str, ...] = ()
    aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)  # other names of tasks -> ours
    open_tasks: bool = False  # the suite accepts any task name (gym: any Gymnasium id), see `with_run_tasks`

    def canonical_task(self, name: str) -> str | None:
        """Our name of a task named in a published file, or None if the suite has no such task."""
        if name in self.tasks:
            return name
        alias = self.aliases.get(name)
        return alias if alias in self.tasks else None

    @property
    def name(self) -> str:
        return self.scoring.name

    @property
    def budget_frames(self) -> int:
        return self.budget * self.frames_per_step


def suite_info(name: str, protocol: str | None = None) -> SuiteInfo:
    """Combine the leaderboard's scoring table with the registered suite spec (loaded lazily).

    If the suite's module cannot be imported (suites are developed in parallel) the leaderboard's own table
    is used and a note says so: published rows can always be rebuilt.
    """
    scoring = normalize.scoring(name)
    notes = []
    open_tasks = False
    try:
        from bench import registry

        spec = registry.get_suite(name)
    except (KeyError, ImportError) as error:  # RegistryError is a KeyError
        notes.append(
            f"suite spec {name!r} could not be loaded ({error}); used the leaderboard's own defaults"
        )
        tasks, default, window, budget, fps = (
            scoring.tasks, scoring.protocols[0], scoring.window, scoring.budget, scoring.frames_per_step,
        )  # fmt: skip
        aliases = dict(scoring.aliases)
    else:
        tasks, default, window, budget = spec.tasks, spec.eval_protocol, spec.eval_window, spec.budget
        open_tasks = bool(getattr(spec, "open_tasks", False))
        aliases = dict(spec.task_aliases)
        fps = spec.frames_per_step(spec.protocol_cls())
        if default not in normalize.PROTOCOLS:
            raise ValueError(f"suite {name!r} declares an unknown eval_protocol {default!r}")
    protocol = protocol or default
    if protocol not in normalize.PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(normalize.PROTOCOLS)}")
    allowed = set(scoring.protocols) | {default}
    if protocol not in allowed:
        raise ValueError(
            f"suite {name!r} runs cannot be scored under {protocol!r}; use one of {sorted(allowed)}"
        )
    if protocol == "train_window" and window <= 0:
        window = scoring.window
        if window <= 0:
            raise ValueError(f"suite {name!r} defines no window for the train_window protocol")
    return SuiteInfo(
        scoring, tuple(tasks), protocol, int(window), int(budget), int(fps), tuple(notes), aliases,
        open_tasks=open_tasks,
    )


def with_run_tasks(info: SuiteInfo, roots: Sequence[Path]) -> SuiteInfo:
    """A suite that accepts any task ranks the tasks its runs used (its listed tasks are only defaults)."""
    if not info.open_tasks:
        return info
    found = sorted({p.name for root in roots for p in (Path(root) / info.name).glob("*") if p.is_dir()})
    return dataclasses.replace(info, tasks=tuple(found)) if found else info


# -------------------------------------------------------------------------------------- containers


@dataclasses.dataclass
class Run:
    """One finished run reduced to its final score."""

    folder: Path
    suite: str
    task: str
    agent: str
    config_hash: str
    seed: int
    raw: float  # final score in the suite's score unit
    episodes: int  # episodes the score is computed from
    broken: int  # broken episodes excluded (all modes)
    commit: str | None
    dirty: bool | None
    train_frames: np.ndarray  # env frames at the end of each (non-broken) training episode
    train_records: list[dict]  # those episodes' records, for sample-efficiency curves
    scores_sha256: str
    cost_seconds: float | None = None  # process wall time for this run (a vmapped group's time per seed)
    hardware: str = "unknown"  # where it ran, e.g. "cpu, 2 threads"
    patch: str | None = None  # the file in the run folder holding a dirty checkout's changes (code.diff)

    @property
    def method(self) -> str:
        return f"{self.agent}@{self.config_hash}"


@dataclasses.dataclass
class Curve:
    """A learning curve: env frames of each point and the value there (episode values or binned means)."""

    frames: np.ndarray
    values: np.ndarray
    records: list[dict] | None = None  # episode records when values must be reduced per bin (Crafter)


@dataclasses.dataclass
class Method:
    """All final scores of one leaderboard row, raw (suite score unit), per task in run order."""

    label: str
    kind: str  # "runs" (ours), "reference" (published per-run scores), "table" (published means only)
    protocol: str
    protocol_detail: str
    source: str
    note: str = ""
    raw: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    run_ids: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # run folder or seed per score
    curves: dict[str, list[Curve]] = dataclasses.field(default_factory=dict)
    table: dict[str, tuple[float, float | None]] = dataclasses.field(default_factory=dict)  # mean, std
    excluded: list[str] = dataclasses.field(default_factory=list)  # runs left out, with the reason
    broken_episodes: int = 0
    commits: list[str] = dataclasses.field(default_factory=list)
    cost_seconds: list[float] = dataclasses.field(default_factory=list)  # per run, where the manifest says
    hardware: list[str] = dataclasses.field(default_factory=list)  # where the runs ran, each once

    def runs_per_task(self) -> dict[str, int]:
        return {task: len(values) for task, values in self.raw.items()}


@dataclasses.dataclass
class LoadReport:
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (folder, reason)
    notes: list[str] = dataclasses.field(default_factory=list)


# ----------------------------------------------------------------------------------------- schema


def _describe(value) -> str:
    return (
        f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__
    )


def _check(where: str, record: Mapping, field: str, kind: str, *, optional: bool = False):
    """Check one field's JSON type; `kind` in int, number, bool, str, dict, int_or_none, str_or_none..."""
    if field not in record:
        if optional:
            return None
        raise ValueError(f"{where}: missing field {field!r}")
    value = record[field]
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str) and value != "",
        "dict": isinstance(value, dict),
        "str_or_none": value is None or isinstance(value, str),
        "bool_or_none": value is None or isinstance(value, bool),
    }[kind]
    if not ok:
        raise ValueError(f"{where}: field {field!r} must be {kind.replace('_', ' ')}, got {_describe(value)}")
    return value


MAX_FILE_BYTES = 512 << 20  # a result or reference file larger than this (or its unzipped data) is refused
MAX_DEPTH = 32  # nesting of a JSON/YAML value; ours nest at most 4 levels deep


def read_result_bytes(path) -> bytes:
    """The bytes of a result or reference file; anything but a regular file of at most MAX_FILE_BYTES is a
    ValueError naming the file (a FIFO would block the read, a huge file would fill the memory)."""
    path = Path(path)
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode) else "special"
        raise ValueError(f"{path}: not a regular file ({kind})")
    if info.st_size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {info.st_size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit for result files")
    with open(path, "rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"{path}: over the {MAX_FILE_BYTES:,}-byte limit for result files")
    return data


def read_result_text(path) -> str:
    try:
        return read_result_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None


def check_depth(where: str, value) -> None:
    """Raise ValueError if `value` nests deeper than MAX_DEPTH (iteratively: no recursion limit to hit)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise ValueError(f"{where}: nests deeper than {MAX_DEPTH} levels")
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))


def _parse_json(path: Path, text: str, what: str = "JSON"):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: not valid {what} ({error.msg} at line {error.lineno} column {error.colno})"
        ) from None
    except RecursionError:
        raise ValueError(f"{path}: nests deeper than {MAX_DEPTH} levels") from None
    check_depth(str(path), value)
    return value


def read_json_file(path) -> object:
    """A JSON file, gzipped or not (detected by its magic bytes)."""
    path = Path(path)
    data = read_result_bytes(path)
    if data[:2] == b"\x1f\x8b":
        try:
            unzip = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            data = unzip.decompress(data, MAX_FILE_BYTES + 1)
        except zlib.error as error:
            raise ValueError(f"{path}: corrupt gzip data ({error})") from None
        if len(data) > MAX_FILE_BYTES:
            raise ValueError(f"{path}: unzips to over the {MAX_FILE_BYTES:,}-byte limit for result files")
        if not unzip.eof:
            raise ValueError(f"{path}: corrupt gzip data (truncated)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    return _parse_json(path, text)


def read_jsonl_strict(path) -> list[tuple[int, dict]]:
    """(line number, record) of every line of a finished run's JSONL file. Unlike `bench.results.read_jsonl`
    a cut-off last line is an error too: a finished run wrote every line completely."""
    path = Path(path)
    text = read_result_text(path)
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}:{number}: not valid JSON ({error.msg}); truncated or corrupt file"
            ) from None
        except RecursionError:
            raise ValueError(f"{path}:{number}: nests deeper than {MAX_DEPTH} levels") from None
        check_depth(f"{path}:{number}", record)
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append((number, record))
    if text and not text.endswith("\n"):
        raise ValueError(f"{path}:{len(text.splitlines())}: last line has no newline; truncated file")
    return records


def validate_manifest(path: Path) -> dict:
    data = _parse_json(path, read_result_text(path))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    from bench.results import MANIFEST_FORMAT, RUN_STATUSES

    if data.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: field 'format' must be {MANIFEST_FORMAT}, got {data.get('format')!r}")
    status = _check(str(path), data, "status", "str")
    if status not in RUN_STATUSES:
        raise ValueError(f"{path}: field 'status' must be one of {', '.join(RUN_STATUSES)}, got {status!r}")
    for field in ("suite", "task", "agent", "config_hash"):
        _check(str(path), data, field, "str")
    for field in ("seed", "budget", "agent_steps", "env_frames"):
        _check(str(path), data, field, "int")
    for field in ("budget", "agent_steps", "env_frames"):
        if data[field] < 0:
            raise ValueError(f"{path}: field {field!r} must be >= 0, got {data[field]}")
    _check(str(path), data, "protocol", "dict")
    code = _check(str(path), data, "code", "dict")
    _check(f"{path} (code)", code, "commit", "str_or_none")
    _check(f"{path} (code)", code, "dirty", "bool_or_none")
    _check(f"{path} (code)", code, "diff", "str_or_none", optional=True)
    return data


def validate_config(path: Path, config_hash: str) -> dict:
    """config.yaml must be a mapping of the run's sections and hash to the manifest's `config_hash`."""
    from bench import config as config_lib

    try:
        data = yaml.safe_load(read_result_text(path))
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    except RecursionError:
        raise ValueError(f"{path}: nests deeper than {MAX_DEPTH} levels") from None
    check_depth(str(path), data)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    for section in ("run", "env", "agent"):
        if not isinstance(data.get(section), dict):
            raise ValueError(f"{path}: missing config section {section!r}")
    try:
        digest = config_lib.plain_config_hash(data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: config values are not plain data ({error})") from None
    if digest != config_hash:
        raise ValueError(
            f"{path}: hashes to {digest} but the manifest says config_hash {config_hash}: "
            "the file was edited or belongs to another run"
        )
    return data


def validate_score_record(where: str, record: dict) -> None:
    for field in ("step", "frames", "worker", "episode", "length"):
        value = _check(where, record, field, "int")
        if value < 0:
            raise ValueError(f"{where}: field {field!r} must be >= 0, got {value}")
    mode = _check(where, record, "mode", "str")
    if mode not in ("train", "eval"):
        raise ValueError(f"{where}: field 'mode' must be 'train' or 'eval', got {mode!r}")
    value = _check(where, record, "return", "number")
    broken = _check(where, record, "broken", "bool")
    if not broken and not math.isfinite(value):
        raise ValueError(f"{where}: field 'return' must be finite, got {value!r}")
    if mode == "eval":
        _check(where, record, "final", "bool")
        _check(where, record, "eval_round", "int")
    else:
        _check(where, record, "final", "bool", optional=True)


def validate_metric_record(where: str, record: dict) -> None:
    value = _check(where, record, "step", "int")
    if value < 0:
        raise ValueError(f"{where}: field 'step' must be >= 0, got {value}")
    for key, value in record.items():
        if isinstance(value, (dict, list)):
            raise ValueError(f"{where}: metric {key!r} must be a scalar, got {type(value).__name__}")


# ----------------------------------------------------------------------------------------- runs


def default_roots() -> list[Path]:
    """The repository's published `results/` and the local run root (`runs/` or $BENCH_ROOT), if present."""
    from bench.results import default_root

    roots = []
    repository = Path(__file__).resolve().parent.parent
    if (repository / "pyproject.toml").exists():
        roots.append(repository / "results")
    roots.append(default_root())
    unique = []
    for root in roots:
        if root.is_dir() and root.resolve() not in [r.resolve() for r in unique]:
            unique.append(root)
    return unique


def find_run_folders(root: Path, suite: str) -> list[Path]:
    """Run folders of a suite under a results root: any folder holding a manifest or a scores file."""
    base = Path(root) / suite
    if not base.is_dir():
        return []
    folders = {
        p.parent for pattern in ("manifest.json", "scores.jsonl") for p in base.glob(f"*/*/*/*/{pattern}")
    }
    return sorted(folders)


def _layout_problem(folder: Path, manifest: dict) -> str | None:
    from bench.results import run_dir

    expected = run_dir(Path("."), manifest["suite"], manifest["task"], manifest["agent"],
                       manifest["config_hash"], manifest["seed"])  # fmt: skip
    actual = Path(*folder.parts[-5:])
    if actual != expected:
        return f"its manifest describes {expected}, not {actual}"
    return None


def _select_episodes(info: SuiteInfo, records: list[tuple[str, dict]], end: int):
    """The (where, record) pairs the protocol scores, all non-broken."""
    protocol = info.protocol
    if protocol == "final_eval":
        return [(w, r) for w, r in records if r["mode"] == "eval" and r["final"]]
    train = [(w, r) for w, r in records if r["mode"] == "train"]
    if protocol == "train_window":
        return [(w, r) for w, r in train if end - info.window < r["step"] <= end]
    return [(w, r) for w, r in train if r["step"] <= end]  # crafter_score, success_rate


def check_episodes_once(path: Path, records: list[tuple[str, dict]]) -> None:
    """Each episode once, and one final evaluation round: a duplicate means a resume wrote it twice or the
    file was edited, and its score would count twice."""
    first: dict[tuple, str] = {}
    for where, record in records:
        round_ = record["eval_round"] if record["mode"] == "eval" else None
        key = (record["mode"], round_, record["worker"], record["episode"])
        if key in first:
            what = f"{record['mode']} episode {record['episode']} of worker {record['worker']}"
            what += f" in evaluation round {round_}" if round_ is not None else ""
            raise ValueError(f"{where}: {what} appears twice (first at line {first[key].rsplit(':', 1)[1]})")
        first[key] = where
    rounds = sorted({r["eval_round"] for _, r in records if r["mode"] == "eval" and r["final"]})
    if len(rounds) > 1:
        raise ValueError(f"{path}: {len(rounds)} final evaluation rounds ({', '.join(map(str, rounds))}); a run has one")


def read_run(folder: Path, info: SuiteInfo, *, any_budget: bool = False) -> Run | str:
    """A finished run's final score, or the reason it is skipped. Malformed files raise ValueError."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        return "no manifest.json"
    manifest = validate_manifest(manifest_path)
    if manifest["suite"] != info.name:
        raise ValueError(
            f"{manifest_path}: suite is {manifest['suite']!r} but the folder lies under {info.name!r}"
        )
    problem = _layout_problem(folder, manifest)
    if problem:
        raise ValueError(f"{folder}: folder layout does not match the manifest ({problem})")
    if manifest["status"] != "finished":
        return f"unfinished (status {manifest['status']!r}, {manifest['agent_steps']} agent steps)"
    budget = manifest["budget"]
    if info.budget and budget != info.budget and not any_budget:
        return (
            f"run budget {budget:,} agent steps differs from the suite budget {info.budget:,} "
            "(--any-budget includes it)"
        )
    if manifest["agent_steps"] < budget:
        return f"finished after {manifest['agent_steps']:,} of its {budget:,} agent steps"
    for name in ("config.yaml", "scores.jsonl"):
        if not (folder / name).exists():
            return f"no {name}"
    validate_config(folder / "config.yaml", manifest["config_hash"])
    if (folder / "metrics.jsonl").exists():
        for number, record in read_jsonl_strict(folder / "metrics.jsonl"):
            validate_metric_record(f"{folder / 'metrics.jsonl'}:{number}", record)
    scores_path = folder / "scores.jsonl"
    records = []
    for number, record in read_jsonl_strict(scores_path):
        where = f"{scores_path}:{number}"
        validate_score_record(where, record)
        records.append((where, record))
    if not records:
        return "scores.jsonl has no episodes"
    check_episodes_once(scores_path, records)
    broken = sum(r["broken"] for _, r in records)
    intact = [(w, r) for w, r in records if not r["broken"]]
    chosen = _select_episodes(info, intact, budget)
    if not chosen:
        return f"no episodes under the {info.protocol} protocol ({len(records)} episodes, {broken} broken)"
    raw = normalize.reduce_episodes(info.scoring, [r for _, r in chosen], str(scores_path))
    if info.scoring.episode_value != "crafter":
        for where, record in intact:  # validate every episode's value, not only the chosen ones
            normalize.episode_value(info.scoring, record, where)
    train = [r for _, r in intact if r["mode"] == "train"]
    return Run(
        folder=folder,
        suite=manifest["suite"],
        task=manifest["task"],
        agent=manifest["agent"],
        config_hash=manifest["config_hash"],
        seed=manifest["seed"],
        raw=float(raw),
        episodes=len(chosen),
        broken=int(broken),
        commit=manifest["code"].get("commit"),
        dirty=manifest["code"].get("dirty"),
        patch=manifest["code"].get("diff"),
        train_frames=np.array([r["frames"] for r in train], dtype=np.float64),
        train_records=train,
        scores_sha256=hashlib.sha256(read_result_bytes(scores_path)).hexdigest(),
        cost_seconds=run_cost_seconds(manifest_path, manifest),
        hardware=hardware_label(manifest_path, manifest),
    )


def run_cost_seconds(path: Path, manifest: dict) -> float | None:
    """The run's process wall time in seconds, or None where the manifest has none. Seeds vmapped in one
    process share its time: each segment (one process's part of the run) records its share of `wall_time`
    and its group (`vmap_seeds`), and is charged its time over the group's size. Manifests written before
    segments recorded their time are charged by their last segment's group."""
    wall_time = _check(str(path), manifest, "wall_time", "number", optional=True)
    if wall_time is None:
        return None
    if not math.isfinite(wall_time) or wall_time < 0:
        raise ValueError(f"{path}: field 'wall_time' must be a finite number >= 0, got {wall_time!r}")
    segments = manifest.get("segments") or [{}]
    if not isinstance(segments, list) or not all(isinstance(segment, dict) for segment in segments):
        raise ValueError(f"{path}: field 'segments' must be a list of objects")
    groups = []
    for index, segment in enumerate(segments):
        group = segment.get("vmap_seeds") or [manifest["seed"]]
        if not isinstance(group, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in group):
            raise ValueError(f"{path}: field 'vmap_seeds' of segment {index + 1} must be a list of seeds")
        groups.append(len(group))
    if not all("wall_time" in segment for segment in segments):
        return float(wall_time) / groups[-1]
    total = 0.0
    for index, (segment, size) in enumerate(zip(segments, groups, strict=True)):
        share = _check(f"{path} (segment {index + 1})", segment, "wall_time", "number")
        if not math.isfinite(share) or not 0 <= share <= wall_time * (1 + 1e-9):
            raise ValueError(f"{path}: field 'wall_time' of segment {index + 1} must lie in [0, the run's "
                             f"{wall_time}], got {share!r}")  # fmt: skip
        total += share / size
    return total


def hardware_label(path: Path, manifest: dict) -> str:
    """Where a run ran, as its manifest says: the JAX backend, and on the CPU XLA's thread count."""
    hardware = _check(str(path), manifest, "hardware", "dict", optional=True) or {}
    backend = _check(f"{path} (hardware)", hardware, "jax_backend", "str", optional=True)
    if backend is None:
        return "unknown"
    if backend != "cpu":
        return backend
    from bench.results import xla_cpu_threads

    threads = xla_cpu_threads(hardware)
    valid = isinstance(threads, int) and not isinstance(threads, bool) and threads > 0
    return f"cpu, {threads} threads" if valid else "cpu"


def _missing_runs(keys) -> str:
    """(task, agent, hash, "seedN") keys as "task/agent/hash/seed0-2,4", one entry per configuration."""
    seeds: dict[tuple[str, str, str], list[int]] = {}
    for task, agent, config_hash, seed in keys:
        seeds.setdefault((task, agent, config_hash), []).append(int(seed.removeprefix("seed")))
    entries = []
    for prefix, numbers in sorted(seeds.items()):
        numbers, spans = sorted(numbers), []
        for n in numbers:
            if spans and n == spans[-1][1] + 1:
                spans[-1][1] = n
            else:
                spans.append([n, n])
        ranges = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)
        entries.append("/".join(prefix) + f"/seed{ranges}")
    return ", ".join(entries)


def load_runs(
    roots: Sequence[Path], info: SuiteInfo, report: LoadReport, *, any_budget: bool = False,
    skip_invalid: bool = False, only: Mapping[tuple[str, str, str, int], str] | None = None,
) -> list[Method]:  # fmt: skip
    """Every finished run of the suite under the roots, one row per agent and config hash (`agent@hash`).
    With `only` (a plan's (task, agent, config hash, seed) keys, each mapped to its plan entry's row label),
    just those runs, one row per label; the folders of other runs are not read."""
    seen: dict[tuple, Run] = {}
    runs: list[Run] = []
    wanted = None if only is None else {(t, a, h, f"seed{s}") for t, a, h, s in only}
    label_of = (lambda run: run.method) if only is None else (
        lambda run: only[(run.task, run.agent, run.config_hash, run.seed)]
    )  # fmt: skip
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"results root {root} is not a folder")
        for folder in find_run_folders(root, info.name):
            if wanted is not None and tuple(folder.parts[-4:]) not in wanted:
                continue
            try:
                result = read_run(folder, info, any_budget=any_budget)
            except ValueError as error:
                if not skip_invalid:
                    raise
                report.skipped.append((display_path(folder), f"invalid: {error}"))
                continue
            if isinstance(result, str):
                report.skipped.append((display_path(folder), result))
                continue
            key = (result.task, result.agent, result.config_hash, result.seed)
            if key in seen:
                first = seen[key]
                if first.scores_sha256 != result.scores_sha256:
                    raise ValueError(
                        f"run {result.method} {result.task} seed {result.seed} appears twice with different "
                        f"scores: {first.folder} and {folder}; pass --runs to choose one root"
                    )
                report.skipped.append((display_path(folder), f"duplicate of {display_path(first.folder)}"))
                continue
            seen[key] = result
            runs.append(result)
    if wanted is not None:
        found = {(r.task, r.agent, r.config_hash, f"seed{r.seed}") for r in runs}
        missing = sorted(wanted - found)
        report.notes.append(f"{len(found)} of {len(wanted)} planned runs found finished"
                            + (f"; missing {len(missing)}: " + _missing_runs(missing) if missing else ""))
    methods: dict[str, Method] = {}
    hashes: dict[str, dict[str, list[str]]] = {}  # label -> config hash -> tasks
    for run in sorted(runs, key=lambda r: (label_of(r), r.task, r.seed)):
        if run.task not in info.tasks:
            report.skipped.append(
                (display_path(run.folder), f"task {run.task!r} is not in suite {info.name!r}")
            )
            continue
        label = label_of(run)
        method = methods.get(label)
        if method is None:
            method = methods[label] = Method(
                label=label, kind="runs", protocol=info.protocol,
                protocol_detail=protocol_detail(info), source="our runs",
            )  # fmt: skip
        tasks = hashes.setdefault(label, {}).setdefault(f"{run.agent}@{run.config_hash}", [])
        if run.task not in tasks:
            tasks.append(run.task)
        method.raw.setdefault(run.task, []).append(run.raw)
        method.run_ids.setdefault(run.task, []).append(display_path(run.folder))
        method.curves.setdefault(run.task, []).append(
            Curve(run.train_frames, np.full(len(run.train_frames), np.nan), run.train_records)
        )
        method.broken_episodes += run.broken
        changes = (f"+dirty ({run.patch})" if run.patch else "+dirty") if run.dirty else ""
        commit = f"{run.commit or 'unknown'}{changes}"
        if commit not in method.commits:
            method.commits.append(commit)
        if run.cost_seconds is not None:
            method.cost_seconds.append(run.cost_seconds)
            if run.hardware not in method.hardware:
                method.hardware.append(run.hardware)
    if only is not None:  # a plan's row may hold several configs (a task preset): name them
        for label, method in methods.items():
            by_hash = hashes[label]
            method.note = "config: " + "; ".join(
                name if len(by_hash) == 1 else f"{name} on {', '.join(tasks)}" for name, tasks in by_hash.items()
            )  # fmt: skip
    return list(methods.values())


def display_path(path: Path) -> str:
    """A path relative to the working folder when inside it (outputs must not depend on where a checkout
    lives), else absolute."""
    path = Path(path).absolute()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.as_posix()


def protocol_detail(info: SuiteInfo) -> str:
    if info.protocol == "final_eval":
        return "mean of the final evaluation episodes"
    if info.protocol == "train_window":
        frames = info.window * info.frames_per_step
        return f"mean of the training episodes ending in the last {info.window:,} agent steps ({frames:,} env frames)"
    if info.protocol == "crafter_score":
        return "Crafter score over all training episodes within the budget"
    return "success rate over all training episodes within the budget"


# ----------------------------------------------------------------------------------- references


def read_final_scores(path) -> dict[str, list[float]]:
    """`dict task -> [final score per run]`, every score a finite number."""
    data = read_json_file(path)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON object of task -> list of scores")
    for task, values in data.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: task {task!r} must map to a non-empty list of scores")
        for index, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(
                    f"{path}: task {task!r} run {index} must be a finite number, got {_describe(value)}"
                )
    return {task: [float(v) for v in values] for task, values in data.items()}


def read_curves(path) -> list[dict]:
    """DreamerV3-style curve records `{task, method, seed, xs, ys}` (gzipped or not), validated."""
    data = read_json_file(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of curve records")
    for index, record in enumerate(data):
        where = f"{path} record {index}"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object")
        _check(where, record, "task", "str")
        _check(where, record, "method", "str")
        if (
            "seed" not in record
            or isinstance(record["seed"], bool)
            or not isinstance(record["seed"], (int, str))
        ):
            raise ValueError(
                f"{where}: field 'seed' must be an int or str, got {_describe(record.get('seed'))}"
            )
        for field in ("xs", "ys"):
            values = record.get(field)
            if not isinstance(values, list):
                raise ValueError(f"{where}: field {field!r} must be a list, got {_describe(values)}")
            if not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
            ):
                raise ValueError(f"{where}: field {field!r} must hold finite numbers only")
        if len(record["xs"]) != len(record["ys"]):
            raise ValueError(f"{where}: xs has {len(record['xs'])} points but ys has {len(record['ys'])}")
    return data


def read_table(path) -> dict[str, dict[str, tuple[float, float | None]]]:
    """`dict method -> task -> {mean, std}` of published means (std may be null)."""
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of method -> task -> {{mean, std}}")
    table = {}
    for method, tasks in data.items():
        if not isinstance(tasks, dict):
            raise ValueError(f"{path}: method {method!r} must map tasks to {{mean, std}}")
        table[method] = {}
        for task, cell in tasks.items():
            where = f"{path} {method!r} task {task!r}"
            if not isinstance(cell, dict):
                raise ValueError(f"{where}: expected an object {{mean, std}}")
            mean = _check(where, cell, "mean", "number")
            std = cell.get("std")
            if std is not None and (isinstance(std, bool) or not isinstance(std, (int, float))):
                raise ValueError(f"{where}: field 'std' must be a number or null, got {_describe(std)}")
            table[method][task] = (float(mean), None if std is None else float(std))
    return table


def _reference_task(reference: Reference, name: str) -> str:
    if reference.task_names == "atari":
        from tasks.atari_games import PUBLISHED_TO_TASK

        if name not in PUBLISHED_TO_TASK:
            raise ValueError(f"{reference.file}: unknown Atari game {name!r}")
        return PUBLISHED_TO_TASK[name]
    if not name.startswith(reference.task_prefix):
        raise ValueError(f"{reference.file}: task {name!r} lacks the prefix {reference.task_prefix!r}")
    return name[len(reference.task_prefix) :]


def load_reference(reference: Reference, info: SuiteInfo, report: LoadReport) -> Method:
    method = Method(
        label=reference.method,
        kind="table" if reference.format == "table" else "reference",
        protocol=reference.protocol,
        protocol_detail=reference.protocol_detail,
        source=reference.source,
        note=reference.note,
    )
    path = reference.path()
    unknown = set()

    def canonical(name: str) -> str | None:
        task = info.canonical_task(name)
        if task is None:
            unknown.add(name)
        return task

    if reference.format == "final_scores":
        for name, values in read_final_scores(path).items():
            task = canonical(_reference_task(reference, name))
            if task is not None:
                method.raw[task] = [v * reference.scale for v in values]
                method.run_ids[task] = [f"run {i}" for i in range(len(values))]
    elif reference.format == "curves":
        records = [r for r in read_curves(path) if r["method"] == reference.key]
        if not records:
            raise ValueError(f"{reference.file}: no curves of method {reference.key!r}")
        lo, hi = reference.window_end - reference.window, reference.window_end
        for record in sorted(records, key=lambda r: (r["task"], str(r["seed"]))):
            task = canonical(_reference_task(reference, record["task"]))
            if task is None:
                continue
            xs = np.asarray(record["xs"], dtype=np.float64)
            ys = np.asarray(record["ys"], dtype=np.float64) * reference.scale
            method.curves.setdefault(task, []).append(Curve(xs, ys))
            inside = (xs > lo) & (xs <= hi)
            if not inside.any():
                last = f"{xs.max():,.0f}" if len(xs) else "none"
                method.excluded.append(f"{task} seed {record['seed']}: no curve point in ({lo:,.0f}, {hi:,.0f}] "
                                       f"frames (last point at {last})")  # fmt: skip
                continue
            method.raw.setdefault(task, []).append(float(ys[inside].mean()))
            method.run_ids.setdefault(task, []).append(f"seed {record['seed']}")
    elif reference.format == "table":
        table = read_table(path)
        if reference.key not in table:
            raise ValueError(f"{reference.file}: no method {reference.key!r}")
        for name, (mean, std) in table[reference.key].items():
            task = canonical(name)
            if task is not None:
                method.table[task] = (mean * reference.scale, None if std is None else std * reference.scale)
    else:
        raise ValueError(f"reference {reference.method!r}: unknown format {reference.format!r}")
    if unknown:
        report.notes.append(
            f"{reference.method}: tasks not in suite {info.name!r} ignored: {', '.join(sorted(unknown))}"
        )
    return method


def load_references(info: SuiteInfo, report: LoadReport, names: Iterable[str] | None = None) -> list[Method]:
    references = references_for(info.name)
    if names is not None:
        wanted = list(names)
        available = {r.method for r in references}
        missing = [n for n in wanted if n not in available]
        if missing:
            raise UnknownNameError(
                f"no reference {', '.join(map(repr, missing))} for suite {info.name!r}; "
                f"available: {', '.join(sorted(available)) or 'none'}"
            )
        references = [r for r in references if r.method in wanted]
    return [load_reference(reference, info, report) for reference in references]
