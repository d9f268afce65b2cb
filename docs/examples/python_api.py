"""The Python API in a notebook: train, compare with the random agent, load scores, build the leaderboard.

Run it as a script (each `# %%` block is a notebook cell; in a notebook, drop the `main` wrapper):

    python docs/examples/python_api.py [RESULTS_FOLDER] [STEPS]

It trains DreamerV3 (`debug` size) and the random agent on the toy `reach` task for a few hundred steps
(STEPS, default 300), then builds the toy leaderboard with both rows. Running it again skips the finished
runs, exactly like `bench run`. A script needs the `if __name__ == "__main__":` guard because environment
workers are spawned processes that import the main module; a notebook does not.
"""

import sys
from pathlib import Path

import bench


def main(root: Path, steps: int) -> None:
    # %% Train: same behaviour as `bench run` (resumes an unfinished run, skips a finished one).
    common = dict(steps=steps, logdir=root, overrides={"run.eval_episodes": 5})
    dreamer = bench.run("dreamerv3", "toy", "reach", configs=["debug"], **common)
    baseline = bench.run("random", "toy", "reach", **common)
    print("run folders:", dreamer, baseline, sep="\n  ")

    # %% Episodes of one run (its scores.jsonl as a DataFrame).
    episodes = bench.load_episodes(dreamer)
    print(episodes[["mode", "step", "return"]].tail())

    # %% Final scores of every finished toy run under the folder (one row per run).
    scores = bench.load_runs("toy", roots=[root], any_budget=True)
    print(scores[["task", "method", "seed", "score"]].to_string(index=False))

    # %% The leaderboard: the same files as `bench leaderboard` (Markdown, CSVs, JSON, HTML page, plots).
    board = bench.leaderboard("toy", runs=[root], out=root / "leaderboard", tasks=["reach"], any_budget=True,
                              reps=200)  # fmt: skip
    print(board.table.to_string(index=False))
    print("HTML page:", board.index_html)
    print("plots:", *board.plots, sep="\n  ")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs_example"),
         int(sys.argv[2]) if len(sys.argv) > 2 else 300)  # fmt: skip
