"""Leaderboards: our runs and published reference rows, normalised and aggregated with rliable's metrics.

    bench leaderboard --suite atari100k                      # results/ + runs/ + shipped references
    bench leaderboard --suite toy --runs runs --tasks reach --reps 2000 --out leaderboard_out/toy
    bench leaderboard --suite atari100k --screenshot         # also leaderboard_out/atari100k/screenshot.png
    bench publish runs/atari100k/pong/dreamerv3/<hash>/seed0 # copy a finished run's result files to results/

(`python -m leaderboard leaderboard ...` / `python -m leaderboard publish ...` work the same without the
`bench` entry point.) Outputs in `--out` (default `leaderboard_out/<suite>/`): `leaderboard.md`,
`leaderboard.json`, CSVs (aggregates, per-task, improvement, profiles, curves), plots as PNG and SVG, and
`index.html`, one self-contained page with every table and plot. The same inputs and seed give byte-identical
files. The screenshot needs Chromium (`apt-get install -y chromium`); by hand:

    chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \\
      --disable-component-update --disable-sync --user-data-dir=$(mktemp -d) --window-size=1400,5000 \\
      --screenshot=leaderboard_out/atari100k/screenshot.png leaderboard_out/atari100k/index.html

Modules: `load` (run folders and published files, validated), `normalize` (per-suite scoring), `aggregate`
(vectorised stratified bootstrap of rliable's metrics), `curves` (sample efficiency), `board` (assemble),
`render` (write), `publish`, `browser` (headless Chromium), `cli`; `reference/` holds the published rows.
"""
