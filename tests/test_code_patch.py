"""A run made from a checkout with uncommitted changes keeps them as a patch (`code-<sha>.diff`), so its code
is the commit plus that patch: the patch rebuilds the tree, travels with `publish`, `bench verify` names it."""

from __future__ import annotations

import argparse
import json
import subprocess

import pytest

from bench import results, runner
from leaderboard import cli, publish
from tests.test_leaderboard_fakes import write_run

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]


def git(repo, *args) -> str:
    return subprocess.run([*GIT, "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path):
    """A checkout with a committed text and binary file; the test edits it after."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "agent.py").write_text("scale = 1.0\nshift = 0.0\n")
    (repo / "weights.bin").write_bytes(bytes(range(256)))
    (repo / "other.py").write_text("x = 1\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "start")
    return repo


def test_a_dirty_checkout_leaves_a_patch_that_rebuilds_its_tree(repo, tmp_path):
    folder = tmp_path / "run"
    clean = results.code_version(folder, checkout=repo)
    assert clean == {"commit": git(repo, "rev-parse", "HEAD").strip(), "dirty": False}
    assert not folder.exists()  # nothing to record
    (repo / "untracked.py").write_text("y = 2\n")
    assert results.code_version(folder, checkout=repo)["dirty"] is False and not folder.exists()

    (repo / "agent.py").write_text("scale = -1.0\nshift = 0.0\n")  # a flipped sign, not committed
    (repo / "weights.bin").write_bytes(bytes(range(255, -1, -1)))
    (repo / "other.py").write_text("x = 2\n")
    git(repo, "add", "other.py")  # staged changes count as well
    code = results.code_version(folder, checkout=repo)
    assert code["dirty"] is True and code["commit"] == clean["commit"]
    patch = (folder / code["diff"]).read_bytes()
    assert [p.name for p in folder.iterdir()] == [code["diff"]]
    assert results.DIFF_NAME.fullmatch(code["diff"]) and results.diff_name(patch) == code["diff"]
    assert b"-scale = 1.0\n+scale = -1.0\n" in patch and b"untracked.py" not in patch

    rebuilt = tmp_path / "rebuilt"  # the commit plus the patch is the tree that ran
    subprocess.run(["git", "clone", "-q", str(repo), str(rebuilt)], check=True)
    git(rebuilt, "checkout", "-q", clean["commit"])
    git(rebuilt, "apply", str(folder / code["diff"]))
    for name in ("agent.py", "weights.bin", "other.py"):
        assert (rebuilt / name).read_bytes() == (repo / name).read_bytes(), name


def test_a_run_from_a_dirty_checkout_names_its_patch_in_its_manifest(repo, tmp_path, monkeypatch):
    (repo / "agent.py").write_text("scale = 2.0\nshift = 0.0\n")
    code_version = results.code_version
    monkeypatch.setattr(results, "code_version", lambda folder=None: code_version(folder, checkout=repo))
    overrides = {"run.steps": "100", "run.final_eval": "false"}
    folder = runner.run("random", "toy", "reach", overrides=overrides, root=tmp_path / "runs", quiet=True)
    manifest = json.loads((folder / "manifest.json").read_text())
    name = manifest["code"]["diff"]
    assert manifest["segments"][0]["code"]["diff"] == name
    assert b"+scale = 2.0\n" in (folder / name).read_bytes()


def _with_patch(folder, patch: bytes, *, segment: bool = False) -> str:
    """Record `patch` in a fake run's manifest (the run's code, or a resumed segment's) and its folder."""
    name = results.diff_name(patch)
    (folder / name).write_bytes(patch)
    manifest = json.loads((folder / "manifest.json").read_text())
    code = {"commit": "0123456789abcdef", "dirty": True, "diff": name}
    if segment:
        manifest["segments"] = [{"code": {"commit": "0123456789abcdef", "dirty": False}}, {"code": code}]
    else:
        manifest["code"] = code
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return name


def test_publish_carries_the_patches_and_needs_no_allow_dirty_for_a_recorded_change(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "results"
    folder = write_run(runs, seed=0)
    first = _with_patch(folder, b"--- a/x\n+++ b/x\n")
    second = _with_patch(folder, b"--- a/y\n+++ b/y\n", segment=True)
    assert publish.dirty_parts(json.loads((folder / "manifest.json").read_text())) == []
    publish_cli = argparse.ArgumentParser()
    cli.add_publish_arguments(publish_cli)
    assert cli.run_publish(publish_cli.parse_args([str(folder), "--to", str(tmp_path / "cli")])) == 0
    assert f"(with the uncommitted changes it ran with: {', '.join(sorted([first, second]))})\n" in (
        capsys.readouterr().out
    )
    publication = publish.plan(folder, out)
    result_files = ["config.yaml", "manifest.json", "metrics.jsonl", "scores.jsonl"]
    assert sorted(publication.files) == sorted([*result_files, first, second])
    publish.write(publication)
    assert (publication.target / second).read_bytes() == b"--- a/y\n+++ b/y\n"
    assert publish.plan(folder, out).status == "already published"

    (folder / second).write_bytes(b"--- a/y\n+++ b/z\n")  # changed after the run
    with pytest.raises(ValueError, match=f"{second}: its content does not hash to its name"):
        publish.plan(folder, out)
    (folder / second).unlink()
    with pytest.raises(ValueError, match=f"code.diff of segment 2 names {second}, which is not in the run"):
        publish.plan(folder, out)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["segments"][1]["code"]["diff"] = "../../escape.diff"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"must name a file code-<12 hex digits>.diff, got '../../escape"):
        publish.plan(folder, out)

    manifest["segments"][1]["code"].pop("diff")  # dirty, nothing recorded: only --allow-dirty publishes it
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="segment 2 of the run was made from a checkout with uncommitted"):
        publish.plan(folder, out)
    replacement = publish.plan(folder, out, allow_dirty=True, force=True)
    assert replacement.status == "replace"
    publish.write(replacement)  # the second patch is no longer the run's: it leaves the published copy
    assert sorted(p.name for p in publication.target.glob("code-*")) == [first]
