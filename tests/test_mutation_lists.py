"""The mutation lists of scripts/mutations/ still fit the code (scripts/mutation_check.py runs them).

A refactor that moves a line a mutation patches would otherwise leave the list stale until someone runs the
(slow) mutation check; here every pattern must still apply exactly once and every named test must exist.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SPEC = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
mutation_check = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = mutation_check  # dataclasses look their module up
SPEC.loader.exec_module(mutation_check)
MUTATIONS = [(agent, m) for agent in mutation_check.agents() for m in mutation_check.load(agent)]


WITHOUT_MATH = {"common", "random"}  # shared pieces (mutated through dreamerv3's list) and the random baseline


def test_every_agent_package_has_a_mutation_list():
    packages = {p.parent.name for p in (ROOT / "agents").glob("*/__init__.py")} - WITHOUT_MATH
    assert packages and not packages - set(mutation_check.agents()), (
        f"agents without scripts/mutations/AGENT.py: {sorted(packages - set(mutation_check.agents()))}"
    )


@pytest.mark.parametrize(("agent", "mutation"), MUTATIONS, ids=[f"{a}-{m.name}" for a, m in MUTATIONS])
def test_mutation_applies_to_the_current_code_and_names_existing_tests(agent, mutation):
    source = (ROOT / mutation.path).read_text()
    mutated = mutation_check.mutate(source, mutation)
    assert mutated != source
    compile(mutated, mutation.path, "exec")  # a mutant must still be Python, or it tests nothing
    assert mutation.tests, f"{agent} ({mutation.name}) names no test"
    for test in mutation.tests:
        path, _, function = test.partition("::")
        assert (ROOT / path).is_file(), f"{agent} ({mutation.name}): no test file {path}"
        if function:
            name = function.split("[")[0]
            assert re.search(rf"^def {re.escape(name)}\(", (ROOT / path).read_text(), re.MULTILINE), (
                f"{agent} ({mutation.name}): no test {name} in {path}"
            )


def test_a_stale_pattern_is_reported_with_the_mutation_and_file():
    stale = mutation_check.Mutation("x", "bug", "agents/common/conv.py", "no such line", "y", ("tests",))
    with pytest.raises(ValueError, match=r"mutation x: its pattern occurs 0 times in agents/common/conv.py"):
        mutation_check.mutate("some source", stale)


@pytest.mark.slow
def test_every_planted_bug_makes_a_default_test_fail():
    """The whole mutation check (about 15 minutes on 2 cores): every listed bug is caught."""
    import subprocess

    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "mutation_check.py"), "--agent", "all"],
        cwd=ROOT, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"all {len(MUTATIONS)} mutations caught" in result.stdout
