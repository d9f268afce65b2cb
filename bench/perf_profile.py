"""`bench perf agent --profile N`: where an update's time goes, by XLA operation.

Runs timed updates of a stream under `jax.profiler`, reads the trace back (`jax.profiler.ProfileData`) and
attributes the time of every compiled operation to where it comes from in the program, using the metadata
XLA keeps in the compiled module (`op_name`):

* the pass: forward, or backward (JAX names what the gradient produced `transpose(jvp(...))`),
* whether it runs inside a loop (`while`: a `lax.scan` or `fori_loop`, e.g. the RSSM's filtering over time),
* the JAX primitive it was lowered from (conv_general_dilated, dot_general, concatenate, ...).

It prints these groups by share of the traced time, then the N most expensive single operations with their
result shapes. Times are summed over every thread that executes operations (on a CPU, XLA's worker threads),
so shares are meaningful and absolute figures are not wall times; tracing itself also slows a CPU run (about
1.5x here), which is why `bench perf agent` times the updates without it first.
"""

from __future__ import annotations

import collections
import pathlib
import re
import tempfile

# `%name = f32[8,16]{1,0} op(...) ... op_name="jit(f)/transpose(jvp())/while/body/dot_general"`
_INSTRUCTION = re.compile(r'%([\w.\-]+) = (\S+)[^\n]*?op_name="([^"]*)"')


# A computation's header line, `%fused_computation.3 (param_0: f32[2]) -> f32[2] {`, and a fusion's callee.
_COMPUTATION = re.compile(r"^%([\w.\-]+) \(", re.MULTILINE)
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_PRODUCT = re.compile(r" (dot|convolution)\(")


def _fused_products(hlo_text: str) -> dict[str, str]:
    """Computation name -> the product primitive (dot_general or conv_general_dilated) it contains, directly or
    in the computations it calls, for the computations that contain one."""
    starts = [(m.group(1), m.start()) for m in _COMPUTATION.finditer(hlo_text)]
    bodies = {name: hlo_text[start : hlo_text.find("\n}", start)] for name, start in starts}
    found: dict[str, str | None] = {}

    def product(name: str) -> str | None:
        if name not in found:
            found[name] = None  # cycles cannot occur in HLO; this only guards the recursion
            body = bodies.get(name, "")
            match = _PRODUCT.search(body)
            found[name] = ({"dot": "dot_general", "convolution": "conv_general_dilated"}[match.group(1)] if match
                           else next(filter(None, map(product, _CALLS.findall(body))), None))  # fmt: skip
        return found[name]

    return {name: kind for name in bodies if (kind := product(name))}


def instruction_metadata(hlo_text: str) -> dict[str, tuple[str, str]]:
    """Instruction name -> (result shape, op_name) for every instruction of a compiled module's text.

    A fusion is named after its root's op_name; when it contains a matrix product or convolution under another
    root (XLA's CPU backend fuses an MLP's matmuls into the reduction that follows them), the product is
    added to its primitive, 'reduce_sum (fused dot_general)', so product time is not read as other work."""
    products = _fused_products(hlo_text)
    metadata = {}
    for m in _INSTRUCTION.finditer(hlo_text):
        op_name = m.group(3)
        callee = _CALLS.search(m.group(0))
        fused = products.get(callee.group(1)) if callee and " fusion(" in m.group(0) else None
        if fused and not op_name.endswith(fused):
            op_name += f" (fused {fused})"
        metadata[m.group(1)] = (m.group(2), op_name)
    return metadata


def source_group(op_name: str) -> str:
    """'backward, loop, conv_general_dilated'-style label of where an operation comes from."""
    direction = "backward" if "transpose(" in op_name else "forward"
    place = "loop" if "/while" in op_name else "flat"
    return f"{direction}, {place}, {op_name.rsplit('/', 1)[-1]}"


def operation_times(events, metadata: dict) -> collections.Counter:
    """Nanoseconds per compiled operation: the trace events named like one of the module's instructions."""
    times = collections.Counter()
    for name, duration_ns in events:
        if name in metadata:
            times[name] += duration_ns
    return times


def trace_events(run, repeats: int):
    """(name, duration ns) of every event recorded while `run()` is called `repeats` times."""
    import jax

    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder)
        try:
            for _ in range(repeats):
                run()
        finally:
            jax.profiler.stop_trace()
        path = next(pathlib.Path(folder).rglob("*.xplane.pb"))
        data = jax.profiler.ProfileData.from_file(str(path))
    lines = [line for plane in data.planes for line in plane.lines]
    return [(event.name, event.duration_ns) for line in lines for event in line.events]


def summarise(times: collections.Counter, metadata: dict, repeats: int, top: int) -> dict:
    """Shares by source group and the `top` single operations, per update (JSON-friendly)."""
    total = sum(times.values()) or 1
    groups = collections.Counter()
    for name, ns in times.items():
        groups[source_group(metadata[name][1])] += ns
    return {
        "traced_ms_per_update": total / 1e6 / repeats,
        "groups": [
            {"group": group, "ms": ns / 1e6 / repeats, "share": ns / total}
            for group, ns in groups.most_common()
        ],
        "operations": [
            {"name": name, "ms": ns / 1e6 / repeats, "share": ns / total, "shape": metadata[name][0],
             "op_name": metadata[name][1]}
            for name, ns in times.most_common(top)
        ],  # fmt: skip
    }


def profile_update(step, hlo_text: str, repeats: int, top: int) -> dict:
    """Trace `repeats` calls of `step` (one update of the compiled module `hlo_text`, results fetched) and
    summarise them."""
    metadata = instruction_metadata(hlo_text)
    events = trace_events(step, repeats)
    summary = summarise(operation_times(events, metadata), metadata, repeats, top)
    summary["operations_per_update"] = sum(name in metadata for name, _ in events) / repeats
    return summary


def report_lines(stream: str, profile: dict, groups: int = 15) -> list[str]:
    traced = profile["traced_ms_per_update"]
    lines = [
        f"  profile '{stream}': {traced:.0f} ms of operations per update (all threads, traced; "
        f"{profile['operations_per_update']:,.0f} operations run), by source:",
        "    share  ms/update  pass, loop, primitive",
    ]
    for g in profile["groups"][:groups]:
        lines.append(f"    {100 * g['share']:5.1f}%  {g['ms']:9.1f} ms  {g['group']}")
    lines.append("    the most expensive operations:")
    for op in profile["operations"]:
        share, source = 100 * op["share"], op["op_name"][-70:]
        lines.append(f"    {share:5.1f}%  {op['ms']:9.1f} ms  {op['shape']:<28} {source}")
    return lines
