"""Checkpoints survive kills and power cuts: everything is on disk before LATEST commits it, a committed
checkpoint is never modified, the previous one is kept as a fallback, and a bad LATEST is one clear error."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from bench import checkpoint as checkpoint_lib
from bench import results
from bench.checkpoint import Checkpointer, CheckpointError
from bench.replay import Replay, Table


def _replay(steps: int) -> Replay:
    replay = Replay({"main": Table("main", workers=1, capacity=1000, chunk=8, seed=0)})
    for t in range(steps):
        replay["main"].add(0, {"t": np.int64(t), "x": np.full(3, t, np.float32)})
    return replay


def _tree(value: float):
    return {"w": jnp.full((4,), value, jnp.float32)}


def _save(ckpt: Checkpointer, step: int, value: float, replay: Replay):
    ckpt.save(step=step, header={"counters": {"value": value}}, agent_tree=_tree(value), replay=replay)


def test_every_file_and_folder_is_fsynced_before_latest_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.realpath(src), os.path.realpath(dst)))
        return real_replace(src, dst)

    ckpt = Checkpointer(tmp_path / "ckpt")
    replay = _replay(20)
    _save(ckpt, 10, 1.0, replay)
    first = json.loads((tmp_path / "ckpt" / "header-000000000010.json").read_text())["files"]
    for t in range(20, 30):
        replay["main"].add(0, {"t": np.int64(t), "x": np.full(3, t, np.float32)})
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(type(tmp_path), "replace", lambda self, target: replace(self, target))
    _save(ckpt, 30, 2.0, replay)
    folder = os.path.realpath(tmp_path / "ckpt")
    commit = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == os.path.join(folder, "LATEST"))
    synced_before = {e[1] for e in events[:commit] if e[0] == "fsync"}
    renamed_to = {e[1]: e[2] for e in events[:commit] if e[0] == "replace"}
    synced_before |= {renamed_to[path] for path in list(synced_before) if path in renamed_to}  # fsynced, then renamed
    header = json.loads((tmp_path / "ckpt" / (tmp_path / "ckpt" / "LATEST").read_text().strip()).read_text())
    new_files = [name for name in header["files"] if name not in first]
    assert len(new_files) == 3  # the agent file and the two replay chunks that grew
    for name in new_files + [(tmp_path / "ckpt" / "LATEST").read_text().strip()]:
        assert os.path.join(folder, name) in synced_before, f"{name} not fsynced before the commit"
    assert folder in synced_before and os.path.join(folder, "replay") in synced_before
    assert ("fsync", folder) in events[commit + 1 :]


def test_the_previous_checkpoint_is_kept_and_used_when_the_latest_is_corrupted(tmp_path, capsys):
    ckpt = Checkpointer(tmp_path / "ckpt")
    replay = _replay(5)
    for step, value in ((10, 1.0), (20, 2.0), (30, 3.0)):
        for t in range(replay["main"].count[0], replay["main"].count[0] + 9):
            replay["main"].add(0, {"t": np.int64(t), "x": np.full(3, t, np.float32)})
        _save(ckpt, step, value, replay)
    headers = sorted(p.name for p in (tmp_path / "ckpt").glob("header-*.json"))
    assert headers == ["header-000000000020.json", "header-000000000030.json"]  # older ones deleted
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("agent-*")) == ["agent-000000000020.eqx",
                                                                          "agent-000000000030.eqx"]  # fmt: skip
    latest_agent = tmp_path / "ckpt" / "agent-000000000030.eqx"
    data = bytearray(latest_agent.read_bytes())
    data[-1] ^= 0xFF
    latest_agent.write_bytes(bytes(data))

    loader = Checkpointer(tmp_path / "ckpt")
    header = loader.load_header()
    assert header["step"] == 20 and header["counters"]["value"] == 2.0
    assert "agent-000000000030.eqx is corrupted" in capsys.readouterr().err and loader.notice
    assert float(loader.load_agent(header, _tree(0.0))["w"][0]) == 2.0
    restored = Replay({"main": Table("main", workers=1, capacity=1000, chunk=8, seed=1)})
    loader.load_replay(header, restored)  # the previous checkpoint's replay files are all there
    assert restored["main"].count[0] == 5 + 18


def test_a_save_at_the_same_step_never_touches_the_committed_checkpoint(tmp_path, monkeypatch):
    ckpt = Checkpointer(tmp_path / "ckpt")
    replay = _replay(12)
    _save(ckpt, 10, 1.0, replay)
    real = checkpoint_lib.atomic_write_text

    def killed_at_commit(path, text):
        if path.name == "LATEST":
            raise KeyboardInterrupt  # the process dies before the new checkpoint is committed
        real(path, text)

    monkeypatch.setattr(checkpoint_lib, "atomic_write_text", killed_at_commit)
    with pytest.raises(KeyboardInterrupt):
        _save(ckpt, 10, 2.0, replay)  # e.g. the final save after the final evaluation
    monkeypatch.setattr(checkpoint_lib, "atomic_write_text", real)
    loader = Checkpointer(tmp_path / "ckpt")
    header = loader.load_header()
    assert header["counters"]["value"] == 1.0 and loader.notice is None
    assert float(loader.load_agent(header, _tree(0.0))["w"][0]) == 1.0
    _save(loader, 10, 3.0, replay)  # the same step once more, now committed under a fresh name
    again = Checkpointer(tmp_path / "ckpt")
    assert again.load_header()["counters"]["value"] == 3.0


@pytest.mark.parametrize("content", [b"", b"\n", b"\x00\xff garbage", b"../../manifest.json\n", b"header-1.json"])
def test_an_empty_or_garbage_latest_is_one_clear_error(tmp_path, content):
    ckpt = Checkpointer(tmp_path / "ckpt")
    _save(ckpt, 10, 1.0, _replay(3))
    (tmp_path / "ckpt" / "LATEST").write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        Checkpointer(tmp_path / "ckpt").load_header()
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "ckpt" / "LATEST") in message
    assert ("is empty" in message) if not content.strip() else ("does not name a checkpoint header" in message)


def test_atomic_writes_fsync_their_folder(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(results, "fsync_dir", lambda path: synced.append(os.path.realpath(path)))
    results.atomic_write_text(tmp_path / "manifest.json", "{}\n")
    assert synced == [os.path.realpath(tmp_path)]
