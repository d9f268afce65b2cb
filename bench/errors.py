"""The errors a user can cause and fix; the CLI prints them as one line (set BENCH_DEBUG=1 for tracebacks).

OSError (a missing, read-only or full path) is printed by the CLI as "<path>: <problem>" too."""

from bench.checkpoint import CheckpointError
from bench.config import ConfigError
from bench.envs import InvalidActionError, WorkerError
from bench.registry import RegistryError
from bench.runner import RunError

USER_ERRORS = (
    ConfigError,
    RegistryError,
    RunError,
    CheckpointError,
    InvalidActionError,
    WorkerError,
    KeyError,
    ValueError,
)
