"""Publish finished runs into the repository's `results/` so leaderboards can be rebuilt from the repository.

Only the result files travel (config.yaml, manifest.json, scores.jsonl, metrics.jsonl, and the `code-*.diff`
patches of a run made from a dirty checkout); checkpoints, replay and media stay behind. The run keeps its
relative layout `<suite>/<task>/<agent>/<config-hash>/seed<N>/`.
A run is validated exactly as the leaderboard reads it before anything is copied.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from leaderboard import load
from leaderboard.load import RUN_FILES


@dataclasses.dataclass(frozen=True)
class Publication:
    source: Path
    target: Path
    files: dict  # name -> bytes to write
    status: str  # "publish", "already published", "replace"


def repository_results() -> Path:
    repository = Path(__file__).resolve().parent.parent
    if not (repository / "pyproject.toml").exists():
        raise ValueError("cannot find the repository checkout of this package; pass --to RESULTS_DIR")
    return repository / "results"


def expand_run_folders(paths) -> tuple[list[Path], list[Path]]:
    """(run folders to publish, unfinished runs left out). A run folder named directly is always published
    (an unfinished one is an error there); below a named folder, runs that are not finished yet (still running,
    stopped) are left out, so a results root can be published while some of its runs go on."""
    from bench.results import is_finished

    folders, unfinished = [], []
    for path in map(Path, paths):
        if not path.is_dir():
            raise ValueError(f"{path} is not a folder")
        if (path / "manifest.json").exists():
            folders.append(path)
            continue
        found = sorted(p.parent for p in path.rglob("manifest.json"))
        if not found:
            raise ValueError(f"{path} holds no run folder (no manifest.json below it)")
        folders += [folder for folder in found if is_finished(folder)]
        unfinished += [folder for folder in found if not is_finished(folder)]
    return folders, unfinished


def plan(folder: Path, results: Path, *, force: bool = False, allow_dirty: bool = False,
         any_budget: bool = False) -> Publication:  # fmt: skip
    """Validate a run and work out what publishing it writes; nothing is written yet."""
    from bench.results import run_dir

    folder = Path(folder)
    if not (folder / "manifest.json").exists():
        raise ValueError(f"{folder}: no manifest.json")
    manifest = load.validate_manifest(folder / "manifest.json")
    info = load.suite_info(manifest["suite"])
    result = load.read_run(folder, info, any_budget=any_budget)
    if isinstance(result, str):
        raise ValueError(f"{folder}: not publishable: {result}")
    dirty = dirty_parts(manifest)
    if dirty and not allow_dirty:
        raise ValueError(
            f"{folder / 'manifest.json'}: {', '.join(dirty)} made from a checkout with uncommitted changes it "
            "did not record; its numbers cannot be traced to code. --allow-dirty publishes it"
        )
    target = run_dir(results, manifest["suite"], manifest["task"], manifest["agent"], manifest["config_hash"],
                     manifest["seed"])  # fmt: skip
    files = {name: load.read_result_bytes(folder / name) for name in RUN_FILES if (folder / name).exists()}
    files.update(recorded_patches(folder, manifest))
    if not target.exists():
        return Publication(folder, target, files, "publish")
    existing = {name: load.read_result_bytes(target / name) for name in _published_names(target)}
    if existing == files:
        return Publication(folder, target, files, "already published")
    if not force:
        raise ValueError(f"{target} already holds a different copy of this run; --force replaces it")
    return Publication(folder, target, files, "replace")


def _code_entries(manifest: dict) -> list[tuple[str, dict]]:
    """(part, entry) for the run and each segment, entry holding that part's `code` (or legacy `dirty`)."""
    segments = manifest.get("segments") if isinstance(manifest.get("segments"), list) else []
    return [("run", manifest)] + [(str(i + 1), s) for i, s in enumerate(segments) if isinstance(s, dict)]


def _code(entry: dict) -> dict:
    return entry.get("code") if isinstance(entry.get("code"), dict) else {}


def dirty_parts(manifest: dict) -> list[str]:
    """Which parts of a run were made from a dirty checkout whose changes the run folder does not keep: the
    run (top-level `code.dirty` or `dirty`) and its resumed segments (each segment records `dirty` or
    `code.dirty` of the code that ran it). A part whose `code.diff` names its patch is traceable: not listed."""
    def untraced(entry) -> bool:
        code = _code(entry)
        dirty = entry.get("dirty") is True or code.get("dirty") is True
        return dirty and not isinstance(code.get("diff"), str)

    entries = _code_entries(manifest)
    parts = ["the run was"] if untraced(manifest) else []
    dirty = [part for part, entry in entries[1:] if untraced(entry)]
    if dirty:
        parts.append(f"segment{'s' if len(dirty) > 1 else ''} {', '.join(dirty)} of the run {'were' if len(dirty) > 1 else 'was'}")
    return parts


def recorded_patches(folder: Path, manifest: dict) -> dict[str, bytes]:
    """The patches the manifest names (`code.diff` of the run and its segments), each checked against its
    name's hash: a missing, misnamed or altered patch is a ValueError naming it."""
    from bench.results import DIFF_NAME, diff_name

    patches = {}
    for part, entry in _code_entries(manifest):
        name = _code(entry).get("diff")
        if name is None or name in patches:
            continue
        owner = "the run" if part == "run" else f"segment {part}"
        where = f"{folder / 'manifest.json'}: code.diff of {owner}"
        if not isinstance(name, str) or not DIFF_NAME.fullmatch(name):
            raise ValueError(f"{where} must name a file code-<12 hex digits>.diff, got {name!r}")
        if not (folder / name).exists():
            raise ValueError(f"{where} names {name}, which is not in the run folder")
        data = load.read_result_bytes(folder / name)
        if diff_name(data) != name:
            raise ValueError(f"{folder / name}: its content does not hash to its name (changed since the run)")
        patches[name] = data
    return patches


def _published_names(target: Path) -> list[str]:
    """The files of a published run: its result files and the patches kept beside them."""
    from bench.results import DIFF_NAME

    names = [name for name in RUN_FILES if (target / name).exists()]
    return names + sorted(p.name for p in target.glob("code-*.diff") if DIFF_NAME.fullmatch(p.name))


def write(publication: Publication) -> None:
    from bench.results import atomic_write_bytes

    if publication.status == "already published":
        return
    for name, data in publication.files.items():
        atomic_write_bytes(publication.target / name, data)
    for name in _published_names(publication.target):
        if name not in publication.files:
            (publication.target / name).unlink()
