"""`bench verify RUN_DIR`: rerun a finished run from its own config.yaml and compare the episode scores.

This is how a reader checks a published result on their own machine: the run is rebuilt from the folder
alone (agent, suite, task and seed from `manifest.json`, every setting from `config.yaml`, whose hash must
match the manifest's), trained again into a scratch folder, and its `scores.jsonl` compared record by record
with the published one. Same scores means every episode's step, length and return (and the suite's extra
fields) are equal to the last digit. The lines printed before the verdict say where the two differ in code
version, JAX and hardware, since that is where a difference would come from.

`--steps N` reruns only the first N agent steps and compares the training episodes that ended by then: a
quick check of a long run (the run's budget does not change what happens before it ends).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import shutil
import tempfile
from pathlib import Path

from bench import config as config_lib
from bench import registry, results, runner

EXAMPLES = """\
examples:
  bench verify results/toy/keydoor/dreamerv3/3e6cab80f1/seed2
  bench verify results/toy/reach/svsg/8e9931cbf4/seed0 --steps 1000       (the first 1,000 steps only)
  bench verify results/toy/point/svsg/8e9931cbf4/seed1 --logdir runs/verify (keep the rerun; resumable)

Exit status: 0 same scores, 1 different scores, 2 the folder cannot be rerun (the message says why).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="a finished run folder (manifest.json, config.yaml, scores)")
    parser.add_argument("--steps", type=int, default=None,
                        help="rerun only this many agent steps; compare the training episodes ended by then")
    parser.add_argument("--logdir", type=Path, default=None,
                        help="where the rerun goes (default: a temporary folder, deleted afterwards); "
                        "a stopped rerun resumes from here")
    parser.add_argument("--against", type=Path, default=None, metavar="RERUN",
                        help="compare with this finished rerun instead of rerunning here (one made on "
                        "another machine, or in a checkout of the run's own commit; it may be shorter)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """How two lists of score records compare: `same` counts the equal records before the first difference."""

    published: int
    rerun: int
    same: int
    first_difference: str | None  # None when every record is equal and the counts match

    @property
    def identical(self) -> bool:
        return self.first_difference is None


def rebuild(folder: Path) -> tuple[runner.Resolved, int]:
    """The run's inputs from its folder alone: `Resolved` (config from config.yaml) and the seed."""
    files = ("manifest.json", "config.yaml", "scores.jsonl")
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise runner.RunError(f"{folder}: not a finished run folder (no {', '.join(missing)})")
    manifest = results.read_manifest(folder)
    if manifest.get("status") != "finished":
        status = manifest.get("status")
        raise runner.RunError(f"{folder}: the run is {status!r}, not finished; verify compares finished runs")
    for name in ("agent", "suite", "task", "seed", "config_hash"):
        if name not in manifest:
            raise ValueError(f"{folder / 'manifest.json'}: no {name!r}")
    agent_spec = registry.get_agent(manifest["agent"])
    suite_spec = registry.get_suite(manifest["suite"])
    data = config_lib.load_yaml(folder / "config.yaml")
    sections = dict(config_lib.FRAMEWORK_SECTIONS, env=suite_spec.protocol_cls, agent=agent_spec.config_cls)
    if set(data) != set(sections):
        raise config_lib.ConfigError(
            f"{folder / 'config.yaml'}: expected the sections {sorted(sections)}, found {sorted(data)}"
        )
    parts = {name: config_lib.from_dict(cls, data[name] or {}, f"{name}.") for name, cls in sections.items()}
    config = config_lib.Config(**parts)
    config_lib.check_ranges(config)
    if config.hash() != manifest["config_hash"]:
        raise config_lib.ConfigError(
            f"{folder / 'config.yaml'} hashes to {config.hash()}, but the manifest says "
            f"{manifest['config_hash']}: the config was edited after the run"
        )
    task = suite_spec.resolve_task(manifest["task"])
    return runner.Resolved(agent_spec, suite_spec, task, config, manifest["suite"]), int(manifest["seed"])


def for_rerun(resolved: runner.Resolved, steps: int | None, quiet: bool) -> runner.Resolved:
    """The same run, logging only to files (the logger is not part of the config hash), maybe shorter."""
    config = resolved.config
    logger = dataclasses.replace(config.logger, outputs=("jsonl",), progress=not quiet)
    run = config.run
    if steps is not None:
        if steps <= 0 or steps > run.steps:
            raise config_lib.ConfigError(f"--steps: expected 1 to the run's {run.steps} steps, got {steps}")
        run = dataclasses.replace(run, steps=steps)
    return resolved._replace(config=dataclasses.replace(config, logger=logger, run=run))


def compare(published: list[dict], rerun: list[dict]) -> Comparison:
    """Compare score records in order, each as a whole (every field, exact values)."""
    same = 0
    for mine, theirs in zip(published, rerun):
        if mine != theirs:
            fields = sorted(key for key in set(mine) | set(theirs) if mine.get(key) != theirs.get(key))
            shown = ", ".join(f"{key} {mine.get(key)!r} published, {theirs.get(key)!r} rerun"
                              for key in fields)  # fmt: skip
            where = f"{mine.get('mode')} episode {mine.get('episode')} of worker {mine.get('worker')}"
            return Comparison(len(published), len(rerun), same, f"record {same + 1} ({where}): {shown}")
        same += 1
    if len(published) != len(rerun):
        counts = f"the published run has {len(published)} records, the rerun {len(rerun)}"
        return Comparison(len(published), len(rerun), same, counts)
    return Comparison(len(published), len(rerun), same, None)


def train_records_until(records: list[dict], steps: int) -> list[dict]:
    return [record for record in records if record.get("mode") == "train" and record.get("step", 0) <= steps]


def provenance(manifest: dict) -> dict:
    """What a difference in scores could come from: code commits, JAX, the CPU count, the backend, and
    whether the seed ran vmapped with others (their products are batched, and may add in another order)."""
    segments = manifest.get("segments", [])
    commits = [_commit(segment.get("code", {})) for segment in segments]
    groups = [segment["vmap_seeds"] for segment in segments if segment.get("vmap_seeds")]
    commits = commits or [_commit(manifest.get("code", {}))]
    packages, hardware = manifest.get("packages", {}), manifest.get("hardware", {})
    return {
        "code": ", ".join(dict.fromkeys(commits)),
        "jax": f"{packages.get('jax')} / jaxlib {packages.get('jaxlib')}",
        "cpus": str(results.xla_cpu_threads(hardware)),
        "cpu": str(hardware.get("cpu_model", "not recorded")),
        "backend": f"{hardware.get('jax_backend')} on {hardware.get('machine')}, {hardware.get('system')}",
        "process": "alone" if not groups else "vmapped with seeds " + ", ".join(map(str, groups[-1])),
    }


def _commit(code: dict) -> str:
    """A segment's short commit, "+dirty" when its checkout had uncommitted changes, then the patch that
    records them if the run folder keeps one."""
    dirty = f"+dirty ({code['diff']})" if code.get("dirty") and code.get("diff") else "+dirty"
    return f"{str(code.get('commit'))[:7]}{dirty if code.get('dirty') else ''}"


def _first_code(manifest: dict) -> dict:
    """The code that ran the start of a run: its first segment's, else the manifest's."""
    segments = manifest.get("segments", [])
    return (segments[0] if segments else manifest).get("code", {})


def _compared_settings(config) -> dict:
    """The config without what a rerun may change: the logger and the number of steps."""
    data = config.to_dict()
    del data["logger"]
    data["run"] = dict(data["run"], steps=None)
    return data


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify(folder: Path, *, steps: int | None = None, logdir: Path | None = None, quiet: bool = False,
           say=print) -> Comparison:  # fmt: skip
    """Rerun `folder` with this checkout (into `logdir`, or a temporary folder) and compare its scores."""
    folder = Path(folder)
    resolved, seed = rebuild(folder)
    rerun_resolved = for_rerun(resolved, steps, quiet)
    scratch = None
    if logdir is None:
        scratch = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    root = logdir or scratch
    try:
        budget = rerun_resolved.config.run.steps
        total = resolved.config.run.steps
        say(f"verify {folder}: rerunning {budget} of its {total} steps, seed {seed}, into {root}")
        command = f"bench verify {folder}"
        rerun_folder = runner.run(rerun_resolved, seed=seed, root=root, quiet=quiet, command=command)
        return report(folder, rerun_folder, say=say)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def report(folder: Path, rerun_folder: Path, *, say=print) -> Comparison:
    """Compare a finished run with a finished rerun of it (the same config and seed, maybe fewer steps)."""
    folder, rerun_folder = Path(folder), Path(rerun_folder)
    resolved, seed = rebuild(folder)
    other, other_seed = rebuild(rerun_folder)
    if (other.agent_spec.name, other.suite_spec.name, other.task, other_seed) != (
        resolved.agent_spec.name, resolved.suite_spec.name, resolved.task, seed
    ):
        raise runner.RunError(f"{rerun_folder} is not a rerun of {folder}: another agent, task or seed")
    if _compared_settings(other.config) != _compared_settings(resolved.config):
        raise runner.RunError(f"{rerun_folder} is not a rerun of {folder}: its config differs beyond steps")
    steps, total = other.config.run.steps, resolved.config.run.steps
    if steps > total:
        raise runner.RunError(f"{rerun_folder} ran {steps} steps, more than the {total} of {folder}")
    prefix = steps < total
    published_manifest = results.read_manifest(folder)
    published = provenance(published_manifest)
    here = provenance(results.read_manifest(rerun_folder))
    for key in published:
        unknown = "not recorded" in (published[key], here[key])
        note = "" if published[key] == here[key] or unknown else "   <- differs"
        say(f"  {key:8s} published: {published[key]}\n  {'':8s} rerun:     {here[key]}{note}")
    mine = results.read_jsonl(folder / "scores.jsonl")
    theirs = results.read_jsonl(rerun_folder / "scores.jsonl")
    if prefix:
        mine, theirs = train_records_until(mine, steps), train_records_until(theirs, steps)
    comparison = compare(mine, theirs)
    scope = f"training episodes ended by step {steps}" if prefix else "episode records"
    if comparison.identical:
        detail = ""
        digest = _sha256(folder / "scores.jsonl")
        if not prefix and digest == _sha256(rerun_folder / "scores.jsonl"):
            detail = f" (scores.jsonl sha256 {digest[:12]}... in both)"
        say(f"same scores: all {comparison.same} {scope} identical{detail}")
    else:
        say(f"different scores: {comparison.same} {scope} identical, then {comparison.first_difference}")
        causes = []
        if published["cpus"] != here["cpus"] and published["cpus"].isdigit():
            last = int(published["cpus"]) - 1
            causes.append("the CPU count: XLA runs one thread per usable CPU and splits some sums among "
                          f"them; rerun with as many, e.g. `taskset -c 0-{last} bench verify ...`")
        if published["process"] != here["process"]:
            causes.append(f"vmapping: the published seed ran {published['process']}, the rerun "
                          f"{here['process']}; rerun it as it ran (`bench run ... --seeds A:B --vmap "
                          "--logdir DIR`) and compare with `bench verify RUN --against DIR/...`")
        first = _first_code(published_manifest)
        if first.get("dirty") and not first.get("diff"):
            causes.append("the uncommitted changes the published run was made with (its code says +dirty): "
                          "no file records them, so no rerun can match it for certain")
        if published["code"] != here["code"]:
            commit = str(first.get("commit"))[:7]
            patch = (folder / first["diff"]).resolve() if first.get("dirty") and first.get("diff") else None
            apply = f" && git -C ../at-{commit} apply {patch}" if patch else ""
            causes.append("the code, if it changed the agent's arithmetic since: rerun in a checkout of the "
                          f"published commit{' with its recorded changes' if patch else ''} "
                          f"(`git worktree add ../at-{commit} {commit}{apply}`, the first of the run's "
                          "segments) with the manifest's command and another --logdir, then "
                          "`bench verify RUN --against RERUN`")
        for cause in causes:
            say(f"  it may be {cause}")
    return comparison


def run(args) -> int:
    if args.against is not None:
        if args.steps is not None or args.logdir is not None:
            raise runner.RunError("--against compares two finished runs; it takes no --steps or --logdir")
        comparison = report(args.run, args.against)
    else:
        comparison = verify(args.run, steps=args.steps, logdir=args.logdir, quiet=args.quiet)
    return 0 if comparison.identical else 1
