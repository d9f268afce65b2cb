"""Put known one-line bugs into an agent's source, one at a time, and check that a default test catches each.

    .venv/bin/python scripts/mutation_check.py --agent dreamerv3          # every DreamerV3 mutation
    .venv/bin/python scripts/mutation_check.py --agent hieros --only s5-dt # some of them
    .venv/bin/python scripts/mutation_check.py --agent all                 # every agent (an hour or more)
    .venv/bin/python scripts/mutation_check.py --agent iris --list

The mutations of each agent are data in scripts/mutations/AGENT.py: MUTATIONS, a list of dicts with
`name`, `bug` (what the mutation breaks), `path` (the source file), `old` and `new` (the text replaced and
its replacement; `old` must occur exactly once, or once after `anchor` where one is given) and `tests` (the
test files or ids written to catch it). For each mutation: write the mutated file, run its tests with the
default options (slow tests excluded, no bytecode written), record the failing tests, and write the original
back, also when pytest fails or the script is interrupted (SIGINT, SIGTERM). Before any mutation the same
tests run unmutated: a mutation only counts as caught if they pass without it. Everything runs in a scratch
copy of the repository's files (tracked and untracked-not-ignored), so the working tree is never mutated and
other processes reading it (a parallel test run, an editor) never see a mutant. Prints a Markdown table
mutation -> failing tests; exits 1 if a mutation survives, 2 if the unmutated tests fail.
tests/test_mutation_lists.py checks in the default test run that every pattern still applies to the code.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LISTS = ROOT / "scripts" / "mutations"


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    bug: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    anchor: str = ""  # replace the first `old` after this text (when `old` occurs more than once)


def agents() -> list[str]:
    """The agents that have a mutation list, in name order."""
    return sorted(p.stem for p in LISTS.glob("*.py") if not p.stem.startswith("_"))


def load(agent: str) -> list[Mutation]:
    path = LISTS / f"{agent}.py"
    if not path.is_file():
        raise SystemExit(f"no mutation list for agent {agent!r}; known: {', '.join(agents())}")
    spec = importlib.util.spec_from_file_location(f"mutations_{agent}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    mutations = [Mutation(**{**entry, "tests": tuple(entry["tests"])}) for entry in module.MUTATIONS]
    names = [m.name for m in mutations]
    if len(set(names)) != len(names):
        repeated = sorted(n for n in set(names) if names.count(n) > 1)
        raise SystemExit(f"{path}: mutation names repeat: {repeated}")
    return mutations


def mutate(text: str, mutation: Mutation) -> str:
    """The source with the mutation applied; ValueError when its pattern is missing or ambiguous."""
    start = 0
    if mutation.anchor:
        if text.count(mutation.anchor) != 1:
            raise ValueError(
                f"mutation {mutation.name}: anchor {mutation.anchor!r} is not unique in {mutation.path}"
            )
        start = text.index(mutation.anchor)
    elif text.count(mutation.old) != 1:
        raise ValueError(f"mutation {mutation.name}: its pattern occurs {text.count(mutation.old)} times in "
                         f"{mutation.path}, expected once; update the mutation to the current code")
    index = text.find(mutation.old, start)
    if index < 0:
        raise ValueError(f"mutation {mutation.name}: its pattern is not in {mutation.path} after its anchor")
    return text[:index] + mutation.new + text[index + len(mutation.old) :]


class Interrupted(Exception):
    pass


def _on_signal(signum, frame):
    raise Interrupted(f"signal {signum}")


def scratch_copy(into: Path) -> Path:
    """A copy of the repository's files (tracked, and untracked but not ignored) under `into`."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    tree = into / "repo"
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # listed but deleted in the working tree: not copied
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    return tree


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[bool, list[str], float]:
    """(passed, failing test ids, seconds) of one default pytest run over `tests` in `tree` (its modules come
    first on the import path: `python -m` puts the working folder there)."""
    start = time.monotonic()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.setdefault("JAX_PLATFORMS", "cpu")
    cmd = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *tests]
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    failed = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.MULTILINE)))
    if proc.returncode not in (0, 1):  # 2-5: interrupted, internal or usage error, no tests collected
        print("\n".join(proc.stdout.splitlines()[-15:] + proc.stderr.splitlines()[-15:]), file=sys.stderr)
        failed = failed or [f"<pytest exited {proc.returncode}>"]
    return proc.returncode == 0, failed, time.monotonic() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--agent", required=True, help=f"an agent with a mutation list, or all ({', '.join(agents())})"
    )
    parser.add_argument("--only", nargs="+", help="mutation names to run (default: all of the agent's)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the tests unmutated first")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per pytest run")
    args = parser.parse_args(argv)
    mutations = [m for agent in (agents() if args.agent == "all" else [args.agent]) for m in load(agent)]
    unknown = set(args.only or ()) - {m.name for m in mutations}
    if unknown:
        raise SystemExit(f"unknown mutations {sorted(unknown)}; known: {[m.name for m in mutations]}")
    chosen = [m for m in mutations if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"({m.name}) {m.bug}  [{m.path}] -> {', '.join(m.tests)}")
        return 0
    for m in chosen:  # every pattern must apply before anything runs, so a stale one fails in seconds
        try:
            mutate((ROOT / m.path).read_text(), m)
        except ValueError as error:
            raise SystemExit(str(error)) from None

    signal.signal(signal.SIGTERM, _on_signal)
    with tempfile.TemporaryDirectory(prefix="mutation_check_") as scratch:
        tree = scratch_copy(Path(scratch))
        if not args.skip_baseline:
            files = tuple(sorted({t for m in chosen for t in m.tests}))
            passed, failed, seconds = run_tests(tree, files, args.timeout)
            outcome = "passed" if passed else "FAILED " + ", ".join(failed)
            print(f"unmutated {' '.join(files)}: {outcome} ({seconds:.0f} s)")
            if not passed:
                print("the tests fail without mutations; fix them first", file=sys.stderr)
                return 2

        rows, survivors = [], []
        for m in chosen:
            path = tree / m.path
            original = path.read_text()
            try:
                path.write_text(mutate(original, m))
                passed, failed, seconds = run_tests(tree, m.tests, args.timeout)
            finally:
                path.write_text(original)
            print(f"({m.name}) {m.bug}: {'SURVIVED' if passed else 'caught'} in {seconds:.0f} s", flush=True)
            rows.append((m, failed))
            if passed:
                survivors.append(m.name)

    print("\n| mutation | file | failing default tests |\n|---|---|---|")
    for m, failed in rows:
        names = ", ".join(f.split("::", 1)[-1] for f in failed) or "**none (survived)**"
        print(f"| ({m.name}) {m.bug} | {m.path} | {names} |")
    if survivors:
        print(f"\nsurviving mutations: {survivors}", file=sys.stderr)
        return 1
    print(f"\nall {len(chosen)} mutations caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
