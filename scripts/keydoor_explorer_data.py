"""The THICK PlaNet keydoor slow test's explorer alone: its data coverage (key pick-ups, door openings), without
the offline model and the planners (docs/thick_planet.md, "Reruns on 2026-12-05").

    python scripts/keydoor_explorer_data.py                  # this checkout
    python scripts/keydoor_explorer_data.py /tmp/old-commit  # another checkout's code and test settings

It runs under the test session's JAX settings (tests/conftest.py of the checkout, XLA optimisation level 0
where that sets it; an `XLA_FLAGS` level given by the caller wins). About 8 minutes on 2 CPU cores.
"""

import pathlib
import sys
import tempfile
import time


def main(checkout: str) -> None:
    sys.path.insert(0, checkout)
    import tests.conftest  # noqa: F401  (the test session's JAX settings)
    from tests import test_thick_planet_keydoor as keydoor

    print("from", keydoor.__file__, flush=True)
    with tempfile.TemporaryDirectory() as folder:
        start = time.time()
        data = keydoor.explore(pathlib.Path(folder) / "p2e", keydoor.EXPLORE_STEPS, **keydoor.EXPLORER)
        print(f"p2e {time.time() - start:.0f} s; data: {keydoor.data_coverage(data)}", flush=True)


if __name__ == "__main__":  # env workers are spawned processes: they import this file again
    main(sys.argv[1] if len(sys.argv) > 1 else str(pathlib.Path(__file__).resolve().parent.parent))
