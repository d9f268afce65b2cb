"""Sweeps on a real Ray cluster: a head node on loopback, started by these tests (`ray start --head --block`),
joined by the sweep through `--ray.address` as a user joins an existing cluster."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench import runner
from bench.sweep import RayExecutor, summarize
from tests.runs import ROOT, bench, bench_popen, tree_digest
from tests.test_sweep_robust import FakeJob

# Ray advertises the machine's outward address unless told not to: the cluster stays on 127.0.0.1, where no
# other machine can join it, so it needs no token
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_DISABLE_USAGE_STATS": "1", "RAY_AUTH_MODE": "disabled"}
RUN = ["run", "--agent", "random", "--suite", "toy", "--task", "reach", "--executor", "ray"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The address of a 2-CPU Ray head node on loopback, stopped (with everything it started) at the end."""
    port = _free_port()
    ray_cli = Path(sys.executable).parent / "ray"
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard", "false",
         "--temp-dir", str(tmp_path_factory.mktemp("ray"))],
        env=dict(os.environ, **LOOPBACK_ENV), cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, f"ray start failed:\n{head.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the Ray head node did not come up in 120 s"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        yield address
    finally:
        head.terminate()  # --block: the head stops the processes it started (signalling them all at once is slower)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


@pytest.fixture
def loopback_env(monkeypatch):
    for key, value in LOOPBACK_ENV.items():
        monkeypatch.setenv(key, value)


def _manifests(root) -> dict[str, dict]:
    return {str(p.relative_to(root)): json.loads(p.read_text()) for p in Path(root).rglob("manifest.json")}


@pytest.mark.slow
def test_ray_sweep_writes_the_usual_run_folders_then_skips_finished_runs(cluster, loopback_env, tmp_path):
    args = [*RUN, "--seeds", "0:2", "--steps", "60", "--run.final_eval", "false", "--ray.address", cluster]
    first = bench(*args, root=tmp_path)
    assert "sweep: 2 runs (1 tasks x 2 seeds), on Ray" in first.stderr
    assert f"Ray cluster {cluster}: 2 CPUs, 0 GPUs" in first.stderr and "[2/2] toy/reach/random/seed" in first.stderr
    # the folders a local run of each seed writes
    resolved = runner.resolve("random", "toy", "reach", (), {"run.steps": "60", "run.final_eval": "false"})
    expected = {str(runner.run_folder(resolved, seed, tmp_path).relative_to(tmp_path) / "manifest.json")
                for seed in (0, 1)}  # fmt: skip
    manifests = _manifests(tmp_path)
    assert set(manifests) == expected and all(m["status"] == "finished" for m in manifests.values())
    before = tree_digest(tmp_path)
    bench(*args, root=tmp_path)  # finished runs are skipped: nothing changes
    assert tree_digest(tmp_path) == before


def test_a_failed_run_is_retried_a_bounded_number_of_times(cluster, loopback_env, tmp_path, capsys):
    import ray

    # each attempt appends a line to its job's file; "once" fails on its first attempt only, "always" every time
    def job(name, fail):
        log = tmp_path / name
        code = f"import sys; f = open({str(log)!r}, 'a'); f.write('x\\n'); f.close(); sys.exit({fail})"
        return FakeJob(name, code), log

    once = job("once", f"4 if open({str(tmp_path / 'once')!r}).read().count('x') == 1 else 0")
    always = job("always", "5")
    jobs = [once[0], always[0]]
    ray.init(address=cluster)
    try:
        result = RayExecutor(retries=2, retry_delay=0.2).run_all(jobs)
    finally:
        ray.shutdown()
    assert result.codes == [0, 5]
    assert once[1].read_text().count("x") == 2 and always[1].read_text().count("x") == 3  # 1 + 2 retries
    assert summarize(jobs, result) == 1
    err = capsys.readouterr().err
    assert "once: failed (exit 4) on attempt 1 of 3; retrying" in err and "[1/2] once: ok (attempt 2)" in err
    assert "always: failed (exit 5) (attempt 3)" in err and "1 of 2 runs failed: always" in err


def _lock_holder(root) -> int | None:
    """The pid of the process writing the run folder under root (its .lock names it), once a checkpoint past 0 exists."""
    for lock in Path(root).rglob(".lock"):
        latest = lock.parent / "ckpt" / "LATEST"
        try:
            text, step = lock.read_text(), json.loads((latest.parent / latest.read_text().strip()).read_text())["step"]
        except (OSError, ValueError, KeyError):
            continue
        if text.startswith("process ") and step > 0:
            return int(text.split()[1])
    return None


@pytest.mark.slow
def test_a_preempted_run_is_retried_and_resumes_from_its_checkpoint(cluster, loopback_env, tmp_path):
    sweep = bench_popen(*RUN, "--seeds", "0", "--steps", "3000", "--run.save_every", "300", "--run.final_eval", "false",
                        "--ray.address", cluster, root=tmp_path)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while (pid := _lock_holder(tmp_path)) is None:
            assert sweep.poll() is None and time.monotonic() < deadline, "the run wrote no checkpoint"
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)  # the machine is taken away: no chance to save
        err = sweep.communicate(timeout=300)[1]
    finally:
        sweep.kill()
    assert sweep.returncode == 0, err[-3000:]
    assert "failed (killed by SIGKILL) on attempt 1 of 3; retrying" in err and "ok (attempt 2)" in err
    (manifest,) = _manifests(tmp_path).values()
    assert manifest["status"] == "finished" and manifest["agent_steps"] == 3000
    assert len(manifest["segments"]) == 2 and manifest["segments"][0]["resumed_from_step"] is None
    assert manifest["segments"][1]["resumed_from_step"] >= 300  # from its checkpoint, not from scratch


@pytest.mark.slow
def test_ctrl_c_stops_the_ray_sweep_and_its_runs_save_a_checkpoint(cluster, loopback_env, tmp_path):
    sweep = bench_popen(*RUN, "--seeds", "0:3", "--steps", "1000000", "--run.save_every", "300",
                        "--ray.address", cluster, root=tmp_path)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while _lock_holder(tmp_path) is None:
            assert sweep.poll() is None and time.monotonic() < deadline, "the runs did not start"
            time.sleep(0.2)
        sweep.send_signal(signal.SIGINT)
        err = sweep.communicate(timeout=120)[1]
    finally:
        sweep.kill()
    assert sweep.returncode == 130, err[-3000:]
    manifests = _manifests(tmp_path)
    assert len(manifests) == 2  # two runs fit on the 2-CPU cluster; the third never started
    assert all(m["status"] == "stopped" for m in manifests.values())
    assert "1 of 3 runs cancelled (not started)" in err


def test_ray_options_need_the_ray_executor(tmp_path):
    proc = bench("run", "--agent", "random", "--suite", "toy", "--task", "reach", "--ray.cpus", "2", root=tmp_path,
                 check=False)  # fmt: skip
    assert proc.returncode == 2 and "--ray.cpus is an option of --executor ray" in proc.stderr


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal mask from Linux /proc")
def test_a_sweep_child_hears_forwarded_signals_that_its_parent_thread_blocked():
    # a Ray worker runs tasks with SIGINT blocked, and a child inherits its parent thread's mask: a stopped sweep's
    # SIGINT would never reach the run unless the run unblocks it
    code = ("import os; from bench.sweep import die_with_parent; die_with_parent(os.getppid()); "
            "print(next(l for l in open('/proc/self/status') if l.startswith('SigBlk')).split()[1])")
    blocked = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    result = {}

    def start():
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)  # this thread only
        result["mask"] = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                        env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True).stdout  # fmt: skip

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    mask = int(result["mask"], 16)
    assert not any(mask & (1 << (sig - 1)) for sig in blocked), f"still blocked: {result['mask']}"
