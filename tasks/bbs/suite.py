"""The `bbs` suite: 16 BringBackShapes tasks, distractors {0, 1, 2, 4} x arena scale {1.0, 1.2, 1.4, 1.6}.

A task name `distract{D}_size{S}` sets the protocol's `num_distractors` and `arena_scale`; giving either in
the config as well is allowed only if it agrees. Budget: 2.5M frames = 625,000 agent steps at action repeat 4
(the published VSG runs); score = mean final-evaluation return (objects returned, max `num_objects`).
"""

from __future__ import annotations

import dataclasses
import re

from bench.api import SuiteSpec
from tasks.bbs.env import BBSProtocol, BringBackShapes

DISTRACTORS = (0, 1, 2, 4)
SCALES = ("1.0", "1.2", "1.4", "1.6")
TASKS = tuple(f"distract{d}_size{s}" for d in DISTRACTORS for s in SCALES)
# the names used in the published curve files (reference-data/vsg-scores/bbs_curves.json)
PUBLISHED_NAMES = {f"bringbackshapes_sparse_{task}": task for task in TASKS}
_TASK_PATTERN = re.compile(r"distract(\d+)_size(\d+(?:\.\d+)?)")


def task_settings(task: str) -> tuple[int, float]:
    """'distract2_size1.4' -> (2, 1.4)."""
    match = _TASK_PATTERN.fullmatch(task)
    if match is None:
        raise ValueError(f"bbs task {task!r} is not of the form distract<D>_size<S> (e.g. distract0_size1.0)")
    return int(match.group(1)), float(match.group(2))


def protocol_for_task(task: str, protocol: BBSProtocol) -> BBSProtocol:
    """The protocol with the task's distractors and arena scale; a conflicting explicit value is an error."""
    distractors, scale = task_settings(task)
    for field, wanted in (("num_distractors", distractors), ("arena_scale", scale)):
        given = getattr(protocol, field)
        if given is not None and given != wanted:
            raise ValueError(f"bbs task {task!r} sets env.{field}={wanted}, but the config gives {given}")
    return dataclasses.replace(protocol, num_distractors=distractors, arena_scale=scale)


def make_env(task: str, protocol: BBSProtocol, worker_index: int = 0) -> BringBackShapes:
    # Workers differ only through the episode seeds the runner passes to reset(), so worker_index is unused.
    del worker_index
    return BringBackShapes(protocol_for_task(task, protocol))


SUITE = SuiteSpec(
    name="bbs",
    tasks=TASKS,
    protocol_cls=BBSProtocol,
    make_env=make_env,
    budget=625_000,
    eval_protocol="final_eval",
    score_fields=("objects_returned", "score"),
    normaliser="identity",
    description="BringBackShapes (VSG, NeurIPS 2022): push 5 shapes into the goal slot of a partially "
    "observed 2-D arena, with 0-4 random-walk distractors and arena scales 1.0-1.6.",
    task_aliases=PUBLISHED_NAMES,
)
