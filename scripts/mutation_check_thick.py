"""Mutation check for THICK: put each known one-line bug into the source, run the THICK tests, revert.

    python scripts/mutation_check_thick.py             # every mutation, against the test written for it
    python scripts/mutation_check_thick.py --only a,b  # some mutations
    python scripts/mutation_check_thick.py --full      # every mutation against whole files (slower): the
                                                       # THICK math tests and tests/test_thick_faithful.py
    python scripts/mutation_check_thick.py --full tests/test_thick_agent.py  # or against other files

Each mutation must make at least one default test fail; the script prints `mutation -> failing tests` and
exits 1 if one survives (or if a pattern is no longer in the source: update the mutation after a refactor).
The original file is always written back, also on errors and Ctrl-C. Bytecode is not written while a mutant
is on disk, so no stale .pyc outlives a run.

(a)-(e) are the bugs of issue 14 that passed the tests before tests/test_thick_faithful.py; the `hl-*`
mutations check that the high-level tests can fail too. Reference: /work/shared/reference/thick.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TESTS = ("tests/test_thick_faithful.py", "tests/test_thick_math.py")
FAITHFUL = "tests/test_thick_faithful.py::"
LONG_HORIZON = FAITHFUL + "test_long_horizon_return_reads_reward_continue_and_value_at_s_tau"
NEW_CONTEXT = FAITHFUL + "test_gru_and_fine_prior_read_the_new_context"
STRAIGHT_THROUGH = FAITHFUL + "test_binary_gate_gradient_goes_through_the_retanh_gate"
GATE_NOISE = FAITHFUL + "test_gate_noise_is_on_when_filtering_in_imagination_and_in_the_coarse_step"
HL_KL = FAITHFUL + "test_highlevel_action_kl_is_posterior_to_prior_balanced_towards_the_prior"
HL_POSTERIOR = FAITHFUL + "test_highlevel_posterior_reads_the_context_after_and_the_state_before_the_change"


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    bug: str
    path: str
    old: str
    new: str
    anchor: str = ""  # replace the first `old` after this text (when `old` occurs more than once)
    tests: tuple[str, ...] = ()  # the test(s) written to catch it: run by default (--full runs whole files)


MUTATIONS = (
    Mutation(
        "a", "long-horizon value V bootstrapped at the current state instead of s_tau",
        "agents/thick/agent.py",
        "jax.vmap(slow.coarse_critic)(after)",
        "jax.vmap(slow.coarse_critic)(dynamics.coarse_features(latents))",
        tests=(LONG_HORIZON,),
    ),
    Mutation(
        "b", "continue factor dropped from the long-horizon value",
        "agents/thick/agent.py",
        "(reward_after + cont_after * value_after)",
        "(reward_after + value_after)",
        tests=(LONG_HORIZON,),
    ),
    Mutation(
        "c-gru", "GRU reads the old context c_{t-1} (cell and GRU lines swapped)",
        "agents/thick/crssm.py",
        "        context, gates = self.cell(x, context, noise)\n"
        "        deter = self.core(deter, jnp.concatenate([stoch.reshape(-1), context]), action)\n",
        "        deter = self.core(deter, jnp.concatenate([stoch.reshape(-1), context]), action)\n"
        "        context, gates = self.cell(x, context, noise)\n",
        tests=(NEW_CONTEXT,),
    ),
    Mutation(
        "c-prior-filter", "fine prior reads c_{t-1} when filtering",
        "agents/thick/crssm.py",
        'priors = over_time(self._prior_one)(states["deter"], states["context"])',
        'priors = over_time(self._prior_one)(states["deter"], '
        'jnp.concatenate([latent["context"][:, None], states["context"][:, :-1]], 1))',
        tests=(NEW_CONTEXT,),
    ),
    Mutation(
        "c-prior-imagine", "fine prior reads c_{t-1} in imagination",
        "agents/thick/crssm.py",
        "prior = jax.vmap(self._prior_one)(deter, context)",
        'prior = jax.vmap(self._prior_one)(deter, latent["context"])',
        tests=(NEW_CONTEXT,),
    ),
    Mutation(
        "d", "straight-through gradient sent to the gate pre-activation instead of the ReTanh output",
        "agents/thick/gatel0rd.py",
        "return new_context, heaviside_straight_through(gate)",
        "return new_context, heaviside_straight_through(pre_gate)",
        tests=(STRAIGHT_THROUGH,),
    ),
    Mutation(
        "e", "gate noise off in imagination",
        "agents/thick/crssm.py",
        "noise = jax.random.normal(noise_key, (batch, self.context), jnp.float32)",
        "noise = jnp.zeros((batch, self.context), jnp.float32)",
        anchor="def imagine_step",
        tests=(GATE_NOISE,),
    ),
    Mutation(
        "e-coarse", "gate noise off in the coarse step of high-level rollouts",
        "agents/thick/crssm.py",
        "noise = jax.random.normal(noise_key, (batch, self.context), jnp.float32)",
        "noise = jnp.zeros((batch, self.context), jnp.float32)",
        anchor="def coarse_step",
        tests=(GATE_NOISE,),
    ),
    Mutation(
        "hl-kl-direction", "high-level action KL as KL(prior || posterior)",
        "agents/thick/highlevel.py",
        "kl_to_prior = dists.categorical_kl(sg(post), prior)",
        "kl_to_prior = dists.categorical_kl(prior, sg(post))",
        tests=(HL_KL,),
    ),
    Mutation(
        "hl-kl-balance", "high-level action KL balance swapped (0.2 towards the prior)",
        "agents/thick/highlevel.py",
        "kl = kl_balance * kl_to_prior + (1.0 - kl_balance) * kl_to_post",
        "kl = (1.0 - kl_balance) * kl_to_prior + kl_balance * kl_to_post",
        tests=(HL_KL,),
    ),
    Mutation(
        "hl-post-state", "high-level posterior reads the log-probabilities of z_{tau-1} as probabilities",
        "agents/thick/highlevel.py",
        "inputs = jnp.concatenate([x, context_after, jnp.exp(state_before).reshape(-1)])",
        "inputs = jnp.concatenate([x, context_after, state_before.reshape(-1)])",
        tests=(HL_POSTERIOR,),
    ),
    Mutation(
        "hl-post-context", "segment targets carry c_{tau-1} instead of c_tau",
        "agents/thick/segments.py",
        "next_context = shift_left(contexts, 0.0)",
        "next_context = contexts",
        tests=(HL_POSTERIOR,),
    ),
)


def mutate(text: str, mutation: Mutation) -> str:
    """The source with the mutation applied; ValueError when the pattern is missing or ambiguous."""
    start = 0
    if mutation.anchor:
        if text.count(mutation.anchor) != 1:
            raise ValueError(
                f"mutation {mutation.name}: anchor {mutation.anchor!r} is not unique in {mutation.path}"
            )
        start = text.index(mutation.anchor)
    elif text.count(mutation.old) != 1:
        found = text.count(mutation.old)
        raise ValueError(
            f"mutation {mutation.name}: pattern occurs {found} times in {mutation.path} (expected once); "
            "update the mutation to the current code"
        )
    index = text.find(mutation.old, start)
    if index < 0:
        raise ValueError(
            f"mutation {mutation.name}: pattern not found in {mutation.path}; update the mutation"
        )
    return text[:index] + mutation.new + text[index + len(mutation.old) :]


def run_tests(tests: list[str]) -> tuple[int, list[str], str]:
    """Run pytest on `tests` (default marks: not slow); return (exit code, failed test ids, output tail)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.setdefault("JAX_PLATFORMS", "cpu")
    command = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *tests]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    failed = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)))
    return result.returncode, failed, output[-3000:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated mutation names (default: all)")
    parser.add_argument(
        "--full", nargs="*", metavar="TEST", default=None,
        help=f"run whole test files for every mutation (default files: {' '.join(DEFAULT_TESTS)})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only.split(",")]
    unknown = set(filter(None, args.only.split(","))) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error(f"unknown mutations {sorted(unknown)}; known: {[m.name for m in MUTATIONS]}")

    # Check every pattern before running anything, so a stale mutation fails in seconds.
    for mutation in chosen:
        mutate((ROOT / mutation.path).read_text(), mutation)

    survivors = []
    for mutation in chosen:
        path = ROOT / mutation.path
        original = path.read_text()
        started = time.time()
        try:
            path.write_text(mutate(original, mutation))
            tests = list(mutation.tests) if args.full is None else (args.full or list(DEFAULT_TESTS))
            code, failed, tail = run_tests(tests)
        finally:
            path.write_text(original)
        seconds = time.time() - started
        if code == 0 or not failed:
            survivors.append(mutation.name)
            status = "SURVIVED" if code == 0 else f"pytest exit {code} without failing tests:\n{tail}"
            print(f"{mutation.name} ({mutation.bug}) -> {status} [{seconds:.0f} s]", flush=True)
        else:
            print(f"{mutation.name} ({mutation.bug}) -> {', '.join(failed)} [{seconds:.0f} s]", flush=True)
    if survivors:
        print(f"mutations not caught: {', '.join(survivors)}")
        return 1
    print(f"all {len(chosen)} mutations caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
