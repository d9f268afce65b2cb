"""Put known one-line bugs into DreamerV3 and agents/common, one at a time, and check that a default test fails.

    .venv/bin/python scripts/mutation_check.py              # all mutations (about 1-3 minutes each on a laptop)
    .venv/bin/python scripts/mutation_check.py --only 2 5   # some of them
    .venv/bin/python scripts/mutation_check.py --list

For each mutation: patch the source file (the original text must occur exactly once), run the mutation's
test files with the default options (slow tests excluded), record the failing tests, and restore the file,
also when the run fails or is interrupted (SIGINT/SIGTERM). First the same test files run unmutated: a
mutation only counts as caught if they pass without it. Prints a Markdown table mutation -> failing tests
and exits 1 if any mutation survives.

Mutations (1)-(11) are the bugs of issue 14 that the earlier tests let pass; the lettered ones are second
places for the same kind of bug, and (12) is the image decoder's old normalisation.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = "tests/test_common_golden.py"
AGENT = "tests/test_dreamerv3_golden.py"


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    description: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation(
        "1", "dyn/rep stop-gradients swapped", "agents/common/latents.py",
        "    dyn = dists.categorical_kl(sg(post), prior).sum(-1)\n    rep = dists.categorical_kl(post, sg(prior)).sum(-1)\n",
        "    dyn = dists.categorical_kl(post, sg(prior)).sum(-1)\n    rep = dists.categorical_kl(sg(post), prior).sum(-1)\n",
        (COMMON, AGENT),
    ),
    Mutation(
        "2", "advantage sign flipped", "agents/common/behaviour.py",
        "advantage = (returns - target_value) / scale", "advantage = (target_value - returns) / scale", (COMMON,),
    ),
    Mutation(
        "3", "entropy sign flipped", "agents/common/behaviour.py",
        "-(log_prob * sg(advantage) + entropy_scale * entropy)",
        "-(log_prob * sg(advantage) - entropy_scale * entropy)", (COMMON,),
    ),
    Mutation(
        "4", "continue weights not cumulative", "agents/common/behaviour.py",
        "weight = sg(jnp.cumprod(cont, 1)[:, :-1])", "weight = sg(cont[:, :-1])", (COMMON,),
    ),
    Mutation(
        "5", "GRU update-gate offset +1 instead of -1", "agents/common/nets.py",
        "update = jax.nn.sigmoid(update - 1.0)", "update = jax.nn.sigmoid(update + 1.0)", (COMMON, AGENT),
    ),
    Mutation(
        "6", "lambda replaced by 1 - lambda (imagination returns)", "agents/common/behaviour.py",
        "returns = lambda_return(reward, cont, bootstrap, lam)",
        "returns = lambda_return(reward, cont, bootstrap, 1.0 - lam)", (COMMON,),
    ),
    Mutation(
        "6b", "lambda replaced by 1 - lambda (agent passes it)", "agents/dreamerv3/agent.py",
        "imagined_cont, value_bins, lam=cfg.imagination.lam,",
        "imagined_cont, value_bins, lam=1.0 - cfg.imagination.lam,", (AGENT,),
    ),
    Mutation(
        "6c", "lambda replaced by 1 - lambda (lambda_return)", "agents/common/returns.py",
        "mix = (1.0 - last[:, 1:]) * lam", "mix = (1.0 - last[:, 1:]) * (1.0 - lam)", (COMMON,),
    ),
    Mutation(
        "7", "discount dropped from the continue target", "agents/dreamerv3/agent.py",
        'cont_target = (1.0 - data["is_terminal"].astype(jnp.float32)) * discount',
        'cont_target = (1.0 - data["is_terminal"].astype(jnp.float32))', (AGENT,),
    ),
    Mutation(
        "8", "slow-critic regulariser pointed at the online critic (imagination)", "agents/common/behaviour.py",
        "slow_all = dists.twohot_mean(batched(slow_critic,", "slow_all = dists.twohot_mean(batched(critic,", (COMMON,),
    ),
    Mutation(
        "8b", "slow-critic regulariser pointed at the online critic (repval)", "agents/common/behaviour.py",
        "slow_value = dists.twohot_mean(batched(slow_critic, sg(features[:, :-1])), bins)",
        "slow_value = dists.twohot_mean(batched(critic, sg(features[:, :-1])), bins)", (COMMON,),
    ),
    Mutation(
        "9", "rep scale 1.0", "agents/dreamerv3/config.py",
        "    rep: float = 0.1\n", "    rep: float = 1.0\n", (AGENT,),
    ),
    Mutation(
        "10", "symlog-squashed reward target", "agents/dreamerv3/agent.py",
        'dists.twohot_loss(reward_logits, data["reward"], reward_bins)',
        'dists.twohot_loss(reward_logits, dists.symlog(data["reward"]), reward_bins)', (AGENT,),
    ),
    Mutation(
        "11", "repval bootstrapped from the wrong step", "agents/dreamerv3/agent.py",
        "returns[:, 0].reshape(batch_size, steps)", "returns[:, 1].reshape(batch_size, steps)", (AGENT,),
    ),
    Mutation(
        "12", "decoder normalises the deter projection alone: act(norm(x0) + x1)", "agents/common/conv.py",
        "            x = x + self.narrow_proj(self.narrow_hidden(narrow)).reshape(x.shape)\n"
        "        # One norm over the sum of both projections (upstream `spnorm`), not a norm of the wide part alone.\n"
        "        x = act(self.spatial_norm(x))\n",
        "            x = self.spatial_norm(x) + self.narrow_proj(self.narrow_hidden(narrow)).reshape(x.shape)\n"
        "        x = act(x)\n", (COMMON,),
    ),
)


class Interrupted(Exception):
    pass


def _on_signal(signum, frame):
    raise Interrupted(f"signal {signum}")


def run_tests(files: tuple[str, ...], timeout: float) -> tuple[bool, list[str], float]:
    """(passed, failing test ids, seconds) of one default pytest run over `files`."""
    start = time.monotonic()
    cmd = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *files]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.MULTILINE)
    if proc.returncode not in (0, 1):  # 2-5: interrupted, internal or usage error, no tests collected
        tail = "\n".join(proc.stdout.splitlines()[-15:] + proc.stderr.splitlines()[-15:])
        failed = failed or [f"<pytest exited {proc.returncode}>"]
        print(tail, file=sys.stderr)
    return proc.returncode == 0, failed, time.monotonic() - start


def apply(mutation: Mutation) -> str:
    """Write the mutated file; return the original text (the caller restores it)."""
    path = ROOT / mutation.path
    original = path.read_text()
    count = original.count(mutation.old)
    if count != 1:
        raise SystemExit(f"mutation {mutation.name}: the original text occurs {count} times in {mutation.path}, expected once")
    path.write_text(original.replace(mutation.old, mutation.new))
    return original


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="mutation names to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the tests unmutated first")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per pytest run")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTATIONS}
    if unknown:
        raise SystemExit(f"unknown mutations {sorted(unknown)}; known: {[m.name for m in MUTATIONS]}")
    if args.list:
        for m in chosen:
            print(f"({m.name}) {m.description}  [{m.path}] -> {', '.join(m.tests)}")
        return 0
    for m in chosen:  # check every patch applies before running anything
        text = (ROOT / m.path).read_text()
        if text.count(m.old) != 1:
            raise SystemExit(f"mutation {m.name}: the original text occurs {text.count(m.old)} times in {m.path}")

    signal.signal(signal.SIGTERM, _on_signal)
    if not args.skip_baseline:
        files = tuple(sorted({f for m in chosen for f in m.tests}))
        passed, failed, seconds = run_tests(files, args.timeout)
        print(f"baseline {' '.join(files)}: {'passed' if passed else 'FAILED ' + ', '.join(failed)} ({seconds:.0f} s)")
        if not passed:
            print("the tests fail without mutations; fix them first", file=sys.stderr)
            return 2

    rows, survivors = [], []
    for m in chosen:
        original = apply(m)
        try:
            passed, failed, seconds = run_tests(m.tests, args.timeout)
        finally:
            (ROOT / m.path).write_text(original)
        caught = not passed
        print(f"({m.name}) {m.description}: {'caught' if caught else 'SURVIVED'} in {seconds:.0f} s", flush=True)
        rows.append((m, failed))
        if not caught:
            survivors.append(m.name)

    print("\n| mutation | file | failing default tests |\n|---|---|---|")
    for m, failed in rows:
        names = ", ".join(f.split("::", 1)[-1] for f in failed) or "**none (survived)**"
        print(f"| ({m.name}) {m.description} | {m.path} | {names} |")
    if survivors:
        print(f"\nsurviving mutations: {survivors}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
