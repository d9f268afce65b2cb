"""`bench perf agent`: how fast an agent trains and acts on this machine, and how well it uses it.

    bench perf agent --agent dreamerv3 --configs size12m [--batch 16 --length 64] [--suite atari100k --task pong]

Measures, for any registered agent (each stream's batch is synthetic, shaped like the stream):

* compile time of each training stream's jitted update (trace + XLA compile) and of the policy step, all
  through the runner's own compiled agent (`bench.runner.CompiledAgent`),
* update wall time (median of `--updates` timed runs after a warm-up), updates/s and replayed steps/s
  (batch x length per update; context steps not counted, as train_ratio counts them),
* policy steps/s for `--envs` parallel environments,
* imagination steps/s, for agents with the optional `imagination_benchmark` method (see
  `bench.api.ImaginationCase`): each case compiled and timed like an update (on the first
  `--imagination-batch` rows of the stream batches), and within each group of cases ("<group>/<variant>")
  the first variant's speed-up over the others,
* memory: XLA's buffer sizes of each compiled update and imagination case (arguments, outputs, temporaries),
  the process's peak resident memory and, where the device reports it (GPU), its peak bytes in use,
* the update's FLOPs: XLA's cost analysis of the compiled update (which counts each loop body once) and the
  FLOPs of all live matrix products and convolutions counted from the jaxpr with every scan unrolled (dead
  code, which XLA drops, left out: bench/perf_ceiling.py); the latter over the update time is the achieved
  GFLOP/s, and utilisation = achieved / this machine's measured matmul
  throughput in the agent's compute dtype (float32, or bfloat16 with `--set compute_dtype=bfloat16`), the
  better of one measurement before and one after the timed updates (a shared machine's rate drifts); where
  the update does more products than the model needs (space-to-depth encoder stages, which do 1.44x the
  multiply-adds of the convolution and pooling they compute), the utilisation by the model's own FLOPs too,
* with `--ceiling`, the utilisation the update could reach at best: each product timed alone at its shapes
  (bench/perf_ceiling.py), which separates slow kernels from time spent outside the products,
* with `--vmap-seeds N`, each stream's update of N seeds stacked along a seed axis and vmapped in one call, as
  `bench run --seeds 0:N --vmap` runs them (bench/vmap_run.py): seed-updates/s in all against one seed's
  updates/s (how much of the device one seed leaves idle),
* with `--timing-lock FILE`, every timed section holds an exclusive lock on FILE and compilation does not: perf
  runs started side by side on one device (scripts/gpu_check.sh) compile in parallel and time one at a time,
  and each counts its timed sections that ran while another was compiling (`timing`).

Each update is compiled once (ahead of time, for XLA's cost and memory analysis) and that executable is the one
timed: it is the runner's jitted update (`CompiledAgent.jitted_update`) compiled for the same arguments.

Observation and action spaces come from `--suite/--task` (the env is created once to read them) or default to
a 64x64 RGB image and 6 discrete actions (Atari-like). Dotted `--set key=value` overrides work as on
`bench run`. Timing assertions do not belong in tests; this command reports the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import resource
import statistics
import sys
import time

from bench import allocator, compile_cache

DEFAULT_IMAGE = 64
DEFAULT_ACTIONS = 6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", required=True, help="registered agent name or package.module:SPEC")
    parser.add_argument("--configs", nargs="*", default=[], help="agent presets, in order (e.g. size12m)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="dotted config overrides")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the agent's)")
    parser.add_argument("--length", type=int, default=None, help="sequence length (default: the agent's)")
    parser.add_argument("--suite", default=None, help="take observation/action spaces from this suite's task")
    parser.add_argument("--task", default=None)
    parser.add_argument("--image", type=int, default=DEFAULT_IMAGE, help="synthetic image size (no --suite)")
    parser.add_argument("--actions", type=int, default=DEFAULT_ACTIONS, help="synthetic discrete actions")
    parser.add_argument("--updates", type=int, default=5, help="timed updates after one warm-up update")
    parser.add_argument("--envs", type=int, default=1, help="parallel environments for the policy timing")
    parser.add_argument("--imagination-batch", type=int, default=None,
                        help="rows of each batch for the imagination timing (default: the whole batch)")
    parser.add_argument("--policy-steps", type=int, default=200, help="timed policy steps")
    parser.add_argument("--matmul", type=int, default=None,
                        help="size of the square matmul for the peak (default: 2048 on CPU, 8192 on accelerators)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also trace the timed updates and show where their time goes (by pass, loop and "
                             "primitive) and the N most expensive operations (bench/perf_profile.py)")  # fmt: skip
    parser.add_argument("--ceiling", action="store_true",
                        help="also time each matrix product and convolution of the update alone and print the "
                             "utilisation the update could reach if it did nothing else (bench/perf_ceiling.py; "
                             "not with --batch-shards, whose parts' products run side by side)")  # fmt: skip
    parser.add_argument("--vmap-seeds", type=int, default=0, metavar="N",
                        help="also time each stream's update of N seeds stacked and vmapped in one call (as "
                             "`bench run --seeds 0:N --vmap`) against one seed's update")  # fmt: skip
    parser.add_argument("--batch-shards", type=int, default=1, metavar="N",
                        help="run each update as N equal parts of its batch, one per CPU core, as `bench run --set "
                             "run.batch_shards=N` does (bench/batch_shards.py; agents that allow it)")  # fmt: skip
    parser.add_argument("--timing-lock", default=None, metavar="FILE",
                        help="hold an exclusive lock on FILE while timing, not while compiling: perf runs started "
                             "side by side on one device compile in parallel and time one at a time")  # fmt: skip


# ------------------------------------------------------------------------------------------- setup


def _spaces(args):
    from bench import spaces

    if args.suite:
        from bench import registry

        suite = registry.get_suite(args.suite)
        task = suite.resolve_task(args.task or suite.tasks[0])
        env = suite.make_env(task, suite.protocol_cls(), 0)
        try:
            return dict(env.obs_space), dict(env.act_space), f"{suite.name}/{task}"
        finally:
            env.close()
    obs_space = {"image": spaces.image(args.image, args.image), **spaces.step_spaces()}
    return obs_space, {"action": spaces.discrete(args.actions)}, f"synthetic {args.image}x{args.image} RGB, {args.actions} actions"  # fmt: skip


def _agent_config(spec, args):
    """Defaults < presets < --batch/--length < --set (the framework sections are not needed here)."""
    import dataclasses

    from bench import config as config_lib
    from bench import registry

    presets = registry.agent_presets(spec)
    agent_config = spec.config_cls()
    valid = config_lib.all_keys(spec.config_cls)

    def apply(updates: dict, source: str):
        nonlocal agent_config
        for key, value in config_lib._flatten(updates).items():
            section, path = config_lib.route_key(key)
            if section != "agent":
                continue  # run/replay settings of presets do not change the update
            try:
                agent_config = config_lib.replace_path(agent_config, path, value, key, valid)
            except config_lib.ConfigError as error:
                raise config_lib.ConfigError(f"{source}: {error}") from None

    for name in args.configs:
        if name not in presets:
            raise config_lib.ConfigError(f"unknown preset {name!r} for agent {spec.name!r}; presets: {sorted(presets)}")
        apply(presets[name], f"preset {name!r}")
    fields = {f.name for f in dataclasses.fields(agent_config)}
    sizes = {}
    for flag, field in ((args.batch, "batch_size"), (args.length, "batch_length")):
        if flag is not None:
            if field not in fields:
                raise config_lib.ConfigError(f"agent {spec.name!r} has no {field!r} setting for --batch/--length")
            sizes[field] = flag
    apply(sizes, "--batch/--length")
    overrides = {}
    for item in args.set:
        if "=" not in item:
            raise config_lib.ConfigError(f"--set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        overrides[key] = value
    apply(overrides, "--set")
    return agent_config


def _synthetic_batch(obs_space, act_space, extras, spec, rng):
    """A (B, T) batch of the stream's shape and table: random sensors and actions, episode flags, stored extras.

    Table "main" holds observations, actions and the un-prefixed extras; another table holds the extras that
    `act` named "<table>/..." (see bench.api.StreamSpec).
    """
    import numpy as np

    from bench.spaces import PRIVATE_PREFIX

    batch, length = spec.batch, spec.total_length
    data = {}
    if spec.table == "main":
        for key, space in obs_space.items():
            if key.startswith(PRIVATE_PREFIX):
                continue
            if key in ("is_first", "is_last", "is_terminal"):
                data[key] = np.zeros((batch, length), bool)
            elif key == "reward":
                data[key] = rng.normal(size=(batch, length)).astype(np.float32)
            else:
                data[key] = space.sample(rng, (batch, length))
        data["is_first"][:, 0] = True
        for key, space in act_space.items():
            data[key] = space.sample(rng, (batch, length))
        stored = {k: v for k, v in extras.items() if "/" not in k or k.split("/", 1)[0] not in _tables(extras)}
    else:
        prefix = spec.table + "/"
        stored = {k[len(prefix):]: v for k, v in extras.items() if k.startswith(prefix) and k != prefix + "write"}
    for key, value in stored.items():
        value = np.asarray(value)
        data[key] = np.zeros((batch, length, *value.shape[1:]), value.dtype)
    return data


def _tables(extras) -> set[str]:
    """Tables other than "main" that act writes: those with a "<table>/write" extra."""
    return {k.split("/", 1)[0] for k in extras if k.endswith("/write")}


def _obs_batch(obs_space, envs, rng):
    import numpy as np

    from bench.spaces import PRIVATE_PREFIX

    obs = {}
    for key, space in obs_space.items():
        if key.startswith(PRIVATE_PREFIX):
            continue
        obs[key] = space.sample(rng, (envs,)) if key not in ("is_first", "is_last", "is_terminal") else np.zeros(envs, bool)
    obs["is_first"] = np.ones(envs, bool)
    return obs


# ---------------------------------------------------------------------------------------- measuring


_host_shares: dict = {}  # FILE -> this process's shared lock on FILE.host (`--timing-lock FILE`), while not timing
host_quiet = {"sections": 0, "quiet": 0}  # timed sections, and those during which no other perf run compiled


def hold_host(args) -> None:
    """Under `--timing-lock FILE`, hold FILE.host shared from now on except while timing: it tells a timed
    section of another perf run that this one is busy on the host (compiling, mostly). On an H200
    (2026-12-04), runs timed while others compiled measured the same matmul between 10 and 74 TFLOP/s."""
    path = getattr(args, "timing_lock", None)
    if path and path not in _host_shares:
        _host_shares[path] = open(f"{path}.host", "a")
        fcntl.flock(_host_shares[path], fcntl.LOCK_SH)


@contextlib.contextmanager
def timing(args):
    """Hold `--timing-lock` (an exclusive lock on the file) for a timed section; nothing without the flag.

    It also takes FILE.host exclusively if no other perf run holds it (none is compiling: counted in
    `host_quiet`), which keeps new runs from starting to compile meanwhile; it does not wait for it, since
    perf runs keep starting while others wait to time, and a timed section that waited for every compile to
    end would hold the device lock for minutes."""
    path = getattr(args, "timing_lock", None)
    if not path:
        yield
        return
    share = _host_shares.get(path)
    if share is not None:
        fcntl.flock(share, fcntl.LOCK_UN)  # never wait for the lock while holding a share: no deadlock
    try:
        with open(path, "a") as file, open(f"{path}.host", "a") as host:
            fcntl.flock(file, fcntl.LOCK_EX)
            try:
                fcntl.flock(host, fcntl.LOCK_EX | fcntl.LOCK_NB)
                quiet = True
            except BlockingIOError:
                quiet = False
            host_quiet["sections"] += 1
            host_quiet["quiet"] += quiet
            try:
                yield
            finally:
                fcntl.flock(host, fcntl.LOCK_UN)
                fcntl.flock(file, fcntl.LOCK_UN)
    finally:
        if share is not None:
            fcntl.flock(share, fcntl.LOCK_SH)


def time_calls(call, args, host: dict | None = None) -> tuple[list[float], object]:
    """Warm up with `call(0)`, then time `call(1)` .. `call(args.updates)` (under `--timing-lock`): the seconds
    of each timed call and the last call's result. `host`, if given, receives the process's minor page faults
    and kernel seconds per timed call (`bench.allocator` says why they matter on the CPU)."""
    with timing(args):
        result = call(0)
        times = []
        before = resource.getrusage(resource.RUSAGE_SELF)
        for index in range(1, args.updates + 1):
            start = time.perf_counter()
            result = call(index)
            times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_SELF)
    if host is not None:
        host["minor_faults_per_call"] = (after.ru_minflt - before.ru_minflt) / len(times)
        host["kernel_s_per_call"] = (after.ru_stime - before.ru_stime) / len(times)
        host["user_s_per_call"] = (after.ru_utime - before.ru_utime) / len(times)
    return times, result


def matmul_peak(size: int | None = None, repeats: int = 5, dtype: str = "float32") -> float:
    """Best GFLOP/s of a jitted size x size matmul in `dtype` (the machine's practical peak for that dtype).

    On an accelerator one 2048 x 2048 product takes tens of microseconds, less than launching and waiting for
    it: on an H200 it measured 60-116 TFLOP/s in float32 and 102 in bfloat16 (2026-11-30, 2026-12-04), where
    the chip does ~790 in bfloat16. So there the product is 8192 wide and each timing covers a burst of 10
    products queued back to back (XLA runs them in order), divided by 10."""
    import jax
    import jax.numpy as jnp

    on_cpu = jax.default_backend() == "cpu"
    size = size or (2048 if on_cpu else 8192)
    burst = 1 if on_cpu else 10
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32).astype(dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        products = [matmul(a, b) for _ in range(burst)]
        jax.block_until_ready(products)
        best = min(best, (time.perf_counter() - start) / burst)
    return 2.0 * size**3 / best / 1e9


def _peak_rss_mib() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / 1024.0 if sys.platform != "darwin" else usage / 2**20


def measure(args) -> dict:
    """Time the runner's own compiled agent (`bench.runner.CompiledAgent`): policy steps and each stream's update."""
    hold_host(args)
    import equinox as eqx
    import jax
    import numpy as np

    from bench import batch_shards, registry
    from bench.runner import KEY_ACT, CompiledAgent

    parts = getattr(args, "batch_shards", 1)
    batch_shards.ensure_devices(parts)  # before JAX's first operation
    spec = registry.get_agent(args.agent)
    agent_config = _agent_config(spec, args)
    obs_space, act_space, spaces_label = _spaces(args)
    agent = spec.make(agent_config, obs_space, act_space)
    streams = dict(agent.streams())
    if not streams:
        raise SystemExit(f"agent {spec.name!r} does not train (no streams); nothing to measure")
    batch_shards.check(spec, parts, {name: stream.batch for name, stream in streams.items()})
    if parts > 1 and getattr(args, "vmap_seeds", 0):
        raise batch_shards.BatchShardsError("--batch-shards and --vmap-seeds do not combine (as in bench run)")
    rng = np.random.default_rng(args.seed)
    compiled = CompiledAgent(agent, jax.random.key(args.seed), parts)
    compiled.set_state(agent.init(key=jax.random.key(args.seed)))
    # Trainable networks when the state exposes them (DreamerV3 family: `state.nets`); otherwise every float
    # array of the state (which then includes optimizer moments and slow copies).
    state = compiled.state()
    counted = getattr(state, "nets", state)
    params = sum(x.size for x in jax.tree.leaves(eqx.filter(counted, eqx.is_inexact_array)))

    # Policy: compile, then steps/s, through the runner's jitted act (arrays only, counters folded inside).
    obs = _obs_batch(obs_space, args.envs, rng)
    start = time.perf_counter()
    carry, action, extras = compiled.act(compiled.initial_carry(args.envs), obs, (np.int32(0),), KEY_ACT, "train")
    jax.block_until_ready(action)
    act_compile = time.perf_counter() - start
    obs["is_first"] = np.zeros(args.envs, bool)
    with timing(args):
        start = time.perf_counter()
        for step in range(args.policy_steps):
            carry, action, extras = compiled.act(carry, obs, (np.int32(step + 1),), KEY_ACT, "train")
            action, extras = jax.device_get((action, extras))  # the runner fetches both to store them
        policy_seconds = (time.perf_counter() - start) / args.policy_steps

    # The peak is measured before and after the timed updates and the better figure kept: on a shared or
    # thermally throttled machine the matmul rate drifts between minutes, and the higher one is the
    # hardware's capability (so utilisation is never flattered by a slow minute). The products run in the
    # agent's compute dtype (DreamerV3 family `compute_dtype`): the peak is that dtype's.
    compute = getattr(agent_config, "compute_dtype", "float32")
    with timing(args):
        peak_before = matmul_peak(args.matmul, dtype=compute)
    stream_figures, batches = {}, {}
    for name, stream in streams.items():
        batches[name] = _synthetic_batch(obs_space, act_space, jax.device_get(extras), stream, rng)
        stream_figures[name] = _measure_update(compiled, name, stream, batches[name], args)
    imagination = _measure_imagination(agent, compiled.state(), batches, args)
    if getattr(args, "vmap_seeds", 0):
        for name, stream in streams.items():
            stream_figures[name]["vmap"] = _measure_vmapped(agent, name, batches[name], stream_figures[name], args)
    main = stream_figures[next(iter(streams))]
    with timing(args):
        peak_after = matmul_peak(args.matmul, dtype=compute)
    peak = max(peak_before, peak_after)
    for name in streams:  # after every timed call: see model_gflop
        stream_figures[name]["update_gflop_model"] = model_gflop(compiled, name, batches[name])
    total_products = sum(f["update_gflop_products"] for f in stream_figures.values())
    total_seconds = sum(f["update_s_median"] for f in stream_figures.values())
    for f in stream_figures.values():
        f["achieved_gflops"] = f["update_gflop_products"] / f["update_s_median"]
        f["utilisation"] = f["achieved_gflops"] / peak
        f["model_utilisation"] = f["update_gflop_model"] / f["update_s_median"] / peak
        jaxpr = f.pop("jaxpr")
        if getattr(args, "ceiling", False):
            from bench import perf_ceiling

            if parts > 1:
                f["ceiling"] = {"skipped": perf_ceiling.SHARDS_NOT_BOUNDED}
            else:
                f["ceiling"] = perf_ceiling.ceiling(jaxpr, f["update_s_median"], peak)
    figures = {
        "agent": spec.name,
        "configs": list(args.configs),
        "overrides": list(args.set),
        "spaces": spaces_label,
        "parameters": int(params),
        "device": str(jax.devices()[0]),
        "batch_shards": parts,
        "streams": stream_figures,
        "policy_compile_s": act_compile,
        "policy_envs": args.envs,
        "policy_steps_per_s": args.envs / policy_seconds,
        "matmul_peak_gflops": peak,
        "matmul_peak_before_after_gflops": [peak_before, peak_after],
        "compute_dtype": compute,
        "peak_rss_mib": _peak_rss_mib(),
        "host_allocator": allocator.current(),
        "compile_cache": compile_cache.current(),
        "device_peak_mib": _device_peak_mib(),
        "imagination": imagination,
        # the first stream's figures at the top level (one-stream agents: the update)
        **{k: main[k] for k in ("batch", "length", "context", "update_trace_s", "update_compile_s", "update_s_median",
                                "update_s_all", "updates_per_s", "replayed_steps_per_s", "update_gflop_xla",
                                "update_gflop_products", "update_gflop_model", "xla_argument_mib", "xla_output_mib",
                                "xla_temp_mib")},
        "achieved_gflops": total_products / total_seconds,
        "utilisation": total_products / total_seconds / peak,
        "model_utilisation": sum(f["update_gflop_model"] for f in stream_figures.values()) / total_seconds / peak,
        "non_finite_metrics": [m for f in stream_figures.values() for m in f["non_finite_metrics"]],
        # under --timing-lock: timed sections, and those with no other perf run compiling meanwhile
        "timed_sections_quiet_host": [host_quiet["quiet"], host_quiet["sections"]],
    }
    return figures


def _device_peak_mib() -> float | None:
    """Peak bytes in use on the first device since the process started (GPU/TPU; None where not reported)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20


def _measure_imagination(agent, state, batches, args) -> dict:
    """Compile and time each of the agent's `imagination_benchmark` cases (`bench.api.ImaginationCase`)."""
    import jax

    cases_fn = getattr(agent, "imagination_benchmark", None)
    if cases_fn is None:
        return {}
    if args.imagination_batch is not None:
        rows = args.imagination_batch
        batches = {name: {k: v[:rows] for k, v in batch.items()} for name, batch in batches.items()}
    figures = {}
    for name, case in cases_fn(batches).items():
        key = jax.random.key(args.seed)
        start = time.perf_counter()
        executable = jax.jit(case.fn).lower(state, case.inputs, key).compile()
        compile_seconds = time.perf_counter() - start
        memory = executable.memory_analysis()
        times, _ = time_calls(lambda index: jax.block_until_ready(
            executable(state, case.inputs, jax.random.key(args.seed + index))), args)  # fmt: skip
        seconds = statistics.median(times)
        figures[name] = {
            "steps": case.steps,
            "compile_s": compile_seconds,
            "call_s_median": seconds,
            "call_s_all": times,
            "steps_per_s": case.steps / seconds,
            "xla_temp_mib": getattr(memory, "temp_size_in_bytes", 0) / 2**20,
        }
    groups: dict[str, list[str]] = {}
    for name in figures:
        groups.setdefault(name.split("/", 1)[0], []).append(name)
    for names in groups.values():
        first = figures[names[0]]
        first["speedup_over"] = {
            other: first["steps_per_s"] / figures[other]["steps_per_s"] for other in names[1:]
        }
    return figures


def _measure_update(compiled, name, stream, batch, args) -> dict:
    """Compile (state donated, as the runner does) and time one stream's update of the runner's compiled agent."""
    import jax
    import numpy as np

    from bench import perf_ceiling

    counter = np.int32(0)
    update_jaxpr = update_as_run(compiled, name, batch)
    product_flops = perf_ceiling.jaxpr_flops(update_jaxpr)
    hits = compile_cache.hits()
    start = time.perf_counter()
    lowered = compiled.jitted_update.lower(compiled.dynamic, compiled.base_key, batch, counter, name)
    trace_seconds = time.perf_counter() - start
    executable = lowered.compile()
    compile_seconds = time.perf_counter() - start
    from_cache = compile_cache.hits() > hits
    cost = executable.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    memory = executable.memory_analysis()

    def step(counter: int):
        """One update with the state donated, as `CompiledAgent.update` runs it (and without compiling again)."""
        compiled.dynamic, metrics, replay_updates = executable(compiled.dynamic, compiled.base_key, batch,
                                                               np.int32(counter))  # fmt: skip
        return jax.device_get((metrics, replay_updates))  # the runner fetches both after every update

    host = {}
    times, (metrics, _) = time_calls(lambda index: step(1 + index), args, host)
    seconds = statistics.median(times)
    profile = None
    if getattr(args, "profile", 0):
        from bench import perf_profile

        counters = iter(range(10**6, 2 * 10**6))
        with timing(args):
            profile = perf_profile.profile_update(lambda: step(next(counters)), executable.as_text(), args.updates,
                                                  args.profile)  # fmt: skip
    return {
        "profile": profile,
        "jaxpr": update_jaxpr,  # for --ceiling; dropped before the figures are reported
        "batch": stream.batch,
        "length": stream.length,
        "context": stream.context,
        "update_trace_s": trace_seconds,
        "update_compile_s": compile_seconds,
        "update_from_compile_cache": from_cache,
        "update_s_median": seconds,
        "update_s_all": times,
        "updates_per_s": 1.0 / seconds,
        "replayed_steps_per_s": stream.batch * stream.length / seconds,
        "update_gflop_xla": flops / 1e9,
        "update_gflop_products": product_flops / 1e9,
        "xla_argument_mib": getattr(memory, "argument_size_in_bytes", 0) / 2**20,
        "xla_output_mib": getattr(memory, "output_size_in_bytes", 0) / 2**20,
        "xla_temp_mib": getattr(memory, "temp_size_in_bytes", 0) / 2**20,
        "host_minor_faults_per_update": host["minor_faults_per_call"],
        "host_kernel_s_per_update": host["kernel_s_per_call"],
        "host_user_s_per_update": host["user_s_per_call"],
        "non_finite_metrics": [k for k, v in jax.device_get(metrics).items() if not np.all(np.isfinite(v))],
    }


def update_as_run(compiled, name: str, batch):
    """The jaxpr of one update as the runner runs it (under `jax.shard_map` for batch shards: one part's shapes,
    once per device), traced anew: JAX reuses a trace of the same function object, so a new one is made for
    each call (`model_gflop` traces the same update with other forms)."""
    import jax
    import numpy as np

    from bench import batch_shards

    parts = getattr(compiled, "batch_shards", 1)
    update = compiled.keyed_update if parts == 1 else batch_shards.shard_update(compiled.keyed_update, parts)
    trace = jax.make_jaxpr(lambda *args: update(*args), static_argnums=(4,))
    return trace(compiled.dynamic, compiled.base_key, batch, np.int32(0), name)


def model_gflop(compiled, name: str, batch) -> float:
    """GFLOP of one update's live products with each encoder stage traced as its plain convolution and pooling
    (`agents.common.conv.plain_encoder_stages`): the model's own FLOPs. Traced after the timed calls, so that
    no trace cached meanwhile can reach a compiled update."""
    from agents.common import conv
    from bench import perf_ceiling

    with conv.plain_encoder_stages():
        return perf_ceiling.jaxpr_flops(update_as_run(compiled, name, batch)) / 1e9


def _model_utilisation_line(s: dict) -> list[str]:
    """The utilisation counting the model's own FLOPs, where the update does more (space-to-depth encoder
    stages: agents/common/conv.py); none where the two counts agree."""
    model, live = s.get("update_gflop_model"), s["update_gflop_products"]
    if model is None or abs(model - live) <= 1e-3 * live:
        return []
    return [f"           model FLOPs (each encoder stage a plain convolution, then pooling) {model:.1f} GFLOP"
            f" -> utilisation {100 * s['model_utilisation']:.0f}% by the model's FLOPs"]


def _measure_vmapped(agent, name, batch, single: dict, args) -> dict:
    """Compile and time one stream's update of `--vmap-seeds` seeds stacked along a seed axis and vmapped in one
    call (`bench.vmap_run.StackedAgent`, as `bench run --seeds 0:N --vmap` runs them), each seed with its own
    initial state and key and the same synthetic batch; compared with `single`, that stream's one-seed figures."""
    import jax
    import numpy as np

    from bench.runner import CompiledAgent
    from bench.vmap_run import StackedAgent, stack_trees

    seeds = [args.seed + index for index in range(args.vmap_seeds)]
    count = len(seeds)
    agents = []
    for seed in seeds:
        one = CompiledAgent(agent, jax.random.key(seed))
        one.set_state(agent.init(key=jax.random.key(seed)))
        agents.append(one)
    stacked = StackedAgent(agents, [jax.random.key(seed) for seed in seeds])
    del agents
    batches = stack_trees([batch] * count)
    mask = np.ones(count, bool)
    start = time.perf_counter()
    executable = stacked.jitted_update.lower(stacked.dynamic, stacked.keys, batches, np.zeros(count, np.int32), mask,
                                             stream=name).compile()  # fmt: skip
    compile_seconds = time.perf_counter() - start
    memory = executable.memory_analysis()

    def step(index: int):
        counters = np.full(count, 1 + index, np.int32)
        stacked.dynamic, metrics, replay_updates = executable(stacked.dynamic, stacked.keys, batches, counters, mask)
        return jax.device_get((metrics, replay_updates))

    times, _ = time_calls(step, args)
    seconds = statistics.median(times)
    return {
        "seeds": count,
        "compile_s": compile_seconds,
        "update_s_median": seconds,
        "update_s_all": times,
        "seed_updates_per_s": count / seconds,
        "speedup_over_one_seed": count / seconds * single["update_s_median"],
        "xla_temp_mib": getattr(memory, "temp_size_in_bytes", 0) / 2**20,
    }


# The matmul peak measured before and after the updates differing by more than this fraction says the host's
# speed changed while they were timed (on a shared host, 10-20% between minutes: docs/cpu_runs.md).
PEAK_DRIFT_WARNING = 0.10


def peak_drift_lines(peaks: list[float]) -> list[str]:
    """A warning line when the matmul peaks measured before and after the updates differ by more than
    `PEAK_DRIFT_WARNING` of the higher one; no line otherwise."""
    drift = 1 - min(peaks) / max(peaks)
    if drift <= PEAK_DRIFT_WARNING:
        return []
    return [f"  (the matmul peak moved {100 * drift:.0f}% between before and after the updates: the host's speed "
            "changed while they were timed; compare two updates with scripts/update_ab.py, which alternates them "
            "in one process)"]  # fmt: skip


def report_lines(f: dict) -> list[str]:
    lines = [
        f"agent {f['agent']} {' '.join(f['configs'])} {' '.join(f['overrides'])}".rstrip(),
        f"  spaces {f['spaces']}; {f['parameters'] / 1e6:.2f}M parameters; {f['device']}"
        + (f"; each update as {f['batch_shards']} batch shards" if f.get("batch_shards", 1) > 1 else ""),
        f"  policy:  compile {f['policy_compile_s']:.1f} s; {f['policy_steps_per_s']:.0f} steps/s "
        f"({f['policy_envs']} envs)",
    ]
    peaks = " and ".join(f"{p:.0f}" for p in f["matmul_peak_before_after_gflops"])
    lines += peak_drift_lines(f["matmul_peak_before_after_gflops"])
    quiet, sections = f.get("timed_sections_quiet_host", (0, 0))
    if quiet < sections:
        lines.append(f"  (--timing-lock: {sections - quiet} of {sections} timed sections ran while another perf run "
                     "was busy on the host, compiling: their figures may be low)")  # fmt: skip
    for name, s in f["streams"].items():
        lines += [
            f"  update '{name}': batch {s['batch']} x {s['length']} (+{s['context']} context); compile "
            f"{s['update_compile_s']:.1f} s (trace {s['update_trace_s']:.1f} s"
            f"{'; read from the compile cache' if s.get('update_from_compile_cache') else ''}); "
            f"{s['update_s_median']:.3f} s median "
            f"({', '.join(f'{t:.3f}' for t in s['update_s_all'])})",
            f"           {s['updates_per_s']:.2f} updates/s, {s['replayed_steps_per_s']:.0f} replayed steps/s",
            f"  FLOPs:   XLA cost analysis {s['update_gflop_xla']:.1f} GFLOP per update (loop bodies counted once);"
            f" live matmuls + convolutions with loops unrolled {s['update_gflop_products']:.1f} GFLOP",
            f"           -> {s['achieved_gflops']:.1f} GFLOP/s of products; {f['compute_dtype']} matmul peak"
            f" {f['matmul_peak_gflops']:.1f} GFLOP/s (best of {peaks} before/after the updates)"
            f" -> utilisation {100 * s['utilisation']:.0f}%",
            *_model_utilisation_line(s),
            f"  memory:  XLA arguments {s['xla_argument_mib']:.0f} MiB, outputs {s['xla_output_mib']:.0f} MiB, "
            f"temporaries {s['xla_temp_mib']:.0f} MiB; per update {s['host_minor_faults_per_update']:,.0f} minor "
            f"page faults, CPU {s['host_user_s_per_update']:.2f} s user + {s['host_kernel_s_per_update']:.2f} s "
            f"kernel (host allocator {f['host_allocator']}: bench/allocator.py)",
        ]
        v = s.get("vmap")
        if v:
            lines += [
                f"  vmap:    {v['seeds']} seeds stacked in one vmapped update: compile {v['compile_s']:.1f} s; "
                f"{v['update_s_median']:.3f} s median ({', '.join(f'{t:.3f}' for t in v['update_s_all'])})",
                f"           {v['seed_updates_per_s']:.2f} seed-updates/s = {v['speedup_over_one_seed']:.2f}x one "
                f"seed's {s['updates_per_s']:.2f} updates/s; XLA temporaries {v['xla_temp_mib']:.0f} MiB",
            ]
    for name, s in f["streams"].items():
        if s.get("profile"):
            from bench import perf_profile

            lines += perf_profile.report_lines(name, s["profile"])
    for name, s in f["streams"].items():
        if s.get("ceiling"):
            from bench import perf_ceiling

            lines += perf_ceiling.report_lines(name, s["ceiling"])
    for name, s in f["imagination"].items():
        calls = ", ".join(f"{t:.3f}" for t in s["call_s_all"])
        lines += [
            f"  imagine '{name}': {s['steps']} steps per call; compile {s['compile_s']:.1f} s; "
            f"{s['call_s_median']:.3f} s median ({calls})",
            f"           {s['steps_per_s']:.1f} imagined steps/s; XLA temporaries {s['xla_temp_mib']:.0f} MiB",
        ]
        for other, ratio in s.get("speedup_over", {}).items():
            lines.append(f"           {ratio:.1f}x the steps/s of '{other}'")
    device = f"; device peak {f['device_peak_mib']:.0f} MiB" if f["device_peak_mib"] is not None else ""
    lines.append(f"  process peak RSS {f['peak_rss_mib']:.0f} MiB{device}")
    if f["non_finite_metrics"]:
        lines.append(f"  WARNING: non-finite metrics {f['non_finite_metrics']}")
    return lines


def run(args) -> int:
    figures = measure(args)
    for line in report_lines(figures):
        print(line)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(figures, file, indent=2)
    return 1 if figures["non_finite_metrics"] else 0


# ------------------------------------------------------------------------------------------ estimate
#
# `bench perf agent --estimate SUITE`: the wall time of one run of the suite's protocol and of a whole board
# (every task x --board-seeds), from the figures measured above. Its own section: the arithmetic is a pure
# function of those figures (`estimate_run`), so it is tested on fixed inputs.


def add_estimate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--estimate", metavar="SUITE", default=None,
                        help="estimate the wall time of one run of SUITE's protocol and of a whole board")  # fmt: skip
    parser.add_argument("--board-seeds", type=int, default=5, help="seeds per task of the board (--estimate)")
    parser.add_argument("--eval-episode-steps", type=int, default=None,
                        help="agent steps per evaluation episode (--estimate; default: the protocol's cap)")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class StreamPlan:
    name: str
    ratio: float  # replayed steps per policy step
    batch: int
    length: int
    start: int  # agent step of its first update
    update_s: float  # measured seconds per update


def episode_cap(suite_spec, protocol) -> int | None:
    """The protocol's truncation limit in agent steps, if it has one (an upper bound of an episode's length)."""
    if getattr(protocol, "episode_frames", 0):
        return -(-protocol.episode_frames // suite_spec.frames_per_step(protocol))
    for name in ("episode_length", "max_steps", "time_limit"):
        if getattr(protocol, name, 0):
            return int(getattr(protocol, name))
    return None


def estimate_run(*, steps: int, train_fill: int, streams: list[StreamPlan], policy_steps_per_s: float,
                 eval_rounds: int, eval_episodes: int, eval_episode_steps: int, tasks: int, seeds: int) -> dict:  # fmt: skip
    """Seconds of one run and of a board, with the arithmetic as text lines.

    A stream's credit grows by ratio / (batch x length) per policy step once the replay holds `train_fill` steps
    and the stream has started (bench.runner `_train`), so it runs (steps - max(train_fill, start)) x that many
    updates. Policy steps (training and evaluation) take 1 / policy_steps_per_s each (policy_steps_per_s counts
    every env of one batched call). Env stepping is not counted: the workers step while the learner trains.
    """
    lines, total = [], 0.0
    for s in streams:
        trained = max(steps - max(train_fill, s.start), 0)
        updates = trained * s.ratio / (s.batch * s.length)
        seconds = updates * s.update_s
        total += seconds
        lines.append(f"updates '{s.name}': ({steps:,} - {max(train_fill, s.start):,}) steps x {s.ratio:g} / "
                     f"({s.batch} x {s.length}) = {updates:,.0f} updates x {s.update_s:.4g} s = {seconds:,.0f} s")  # fmt: skip
    policy = steps / policy_steps_per_s
    total += policy
    lines.append(f"policy (training): {steps:,} steps / {policy_steps_per_s:,.1f} steps/s = {policy:,.0f} s")
    eval_steps = eval_rounds * eval_episodes * eval_episode_steps
    evaluation = eval_steps / policy_steps_per_s
    total += evaluation
    lines.append(f"policy (evaluation): {eval_rounds} rounds x {eval_episodes} episodes x {eval_episode_steps:,} steps "
                 f"/ {policy_steps_per_s:,.1f} steps/s = {evaluation:,.0f} s")  # fmt: skip
    board = total * tasks * seeds
    lines.append(f"one run: {total:,.0f} s = {total / 3600:.2f} h")
    lines.append(f"board: {tasks} tasks x {seeds} seeds x {total:,.0f} s = {board:,.0f} s = {board / 3600:.1f} h "
                 f"= {board / 86400:.2f} days, one run at a time on this machine")  # fmt: skip
    return {"run_s": total, "board_s": board, "lines": lines}


def run_estimate(args) -> int:
    """Measure the agent as the suite's runs configure it, then print `estimate_run`'s arithmetic."""
    from bench import config as config_lib
    from bench import registry, runner

    suite_spec = registry.get_suite(args.estimate)
    if args.suite and registry.get_suite(args.suite).name != suite_spec.name:
        raise config_lib.ConfigError(f"--estimate {args.estimate} with --suite {args.suite}: name one suite")
    task = suite_spec.resolve_task(args.task or suite_spec.tasks[0])
    overrides = dict(item.split("=", 1) for item in args.set if "=" in item)
    # the suite as given (a registered name or a 'module:NAME' path, which a plain checkout has no names for)
    resolved = runner.resolve(args.agent, args.estimate, task, args.configs, overrides)
    cfg = resolved.config
    # measure the agent the suite's runs train: its suite presets first, then --configs, on the suite's spaces
    presets = registry.agent_presets(resolved.agent_spec)
    automatic = [name for name in (suite_spec.name, f"{suite_spec.name}_{task}") if name in presets]
    protocol = getattr(cfg.env, "eval_protocol", suite_spec.eval_protocol)
    eval_episodes = cfg.run.eval_episodes or suite_spec.eval_episodes
    final = 1 if protocol == "final_eval" or cfg.run.eval_episodes else 0  # as bench.runner `_evaluate`
    eval_rounds = (cfg.run.steps // cfg.run.eval_every if cfg.run.eval_every else 0) + final
    episode_steps = args.eval_episode_steps
    if episode_steps is None and eval_rounds:
        episode_steps = episode_cap(suite_spec, cfg.env)
        if episode_steps is None:
            raise config_lib.ConfigError(f"suite {suite_spec.name!r} has no episode cap: give --eval-episode-steps")
        cap_note = " (the protocol's episode cap: an upper bound; --eval-episode-steps for a typical length)"
    else:
        cap_note = ""
    measured_args = argparse.Namespace(**{**vars(args), "suite": args.estimate, "task": task,
                                          "configs": [*automatic, *args.configs], "envs": cfg.run.envs})  # fmt: skip
    figures = measure(measured_args)
    for line in report_lines(figures):
        print(line)
    obs_space, act_space, _ = _spaces(measured_args)
    agent = resolved.agent_spec.make(cfg.agent, obs_space, act_space)
    streams = [StreamPlan(name, cfg.run.train_ratio if spec.ratio is None else spec.ratio, spec.batch, spec.length,
                          spec.start, figures["streams"][name]["update_s_median"])
               for name, spec in dict(agent.streams()).items()]  # fmt: skip
    result = estimate_run(steps=cfg.run.steps, train_fill=cfg.run.train_fill, streams=streams,
                          policy_steps_per_s=figures["policy_steps_per_s"], eval_rounds=eval_rounds,
                          eval_episodes=eval_episodes, eval_episode_steps=episode_steps or 0,
                          tasks=len(suite_spec.tasks), seeds=args.board_seeds)  # fmt: skip
    print(f"estimate for {suite_spec.name} ({task} measured; {cfg.run.envs} envs, train_ratio {cfg.run.train_ratio:g},"
          f" {cfg.run.steps:,} agent steps, {eval_rounds} evaluation rounds{cap_note}) on {figures['device']}:")
    for line in result["lines"]:
        print(f"  {line}")
    print("  (env stepping not counted: it overlaps with training; `bench perf envs` measures it)")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({**figures, "estimate": {**result, "suite": suite_spec.name}}, file, indent=2)
    return 1 if figures["non_finite_metrics"] else 0
