"""mbrl-bench: model-based RL agents and tasks on equal terms.

The notebook API (`bench.run`, `bench.load_runs`, `bench.load_episodes`, `bench.leaderboard`) lives in
`bench.python_api` and is imported on first use, so `import bench` stays cheap (no JAX, no simulators).
"""

__all__ = ["run", "load_runs", "load_episodes", "leaderboard"]


def __getattr__(name: str):
    if name in __all__:
        from bench import python_api

        return getattr(python_api, name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
