"""Rebuild the shipped reference data from a checkout of the public score files (maintainers only).

    python -m leaderboard.reference.build /path/to/reference-data

`reference-data` holds copies of public files (see `SOURCES.md` for where each comes from). Files are copied
byte for byte, except: CURL's `CURL_10_evals.json` (human-normalised scores) becomes one `dict game -> [raw
returns]` file, and the VSG curve files are gzipped (deterministically, mtime 0). `SOURCES.md` records the
SHA-256 of every input.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

COPIES = {  # shipped name -> path under reference-data
    "atari100k_RANDOM.json": "atari100k/published/RANDOM.json",
    "atari100k_HUMAN.json": "atari100k/published/HUMAN.json",
    "atari100k_IRIS.json": "atari100k/published/IRIS.json",
    "atari100k_DIAMOND.json": "atari100k/published/DIAMOND.json",
    "atari100k_STORM.json": "atari100k/published/STORM.json",
    "atari100k_TWM.json": "atari100k/published/TWM.json",
    "atari100k_DeltaIRIS.json": "atari100k/published/DeltaIRIS.json",
    "atari100k_DreamerV3_2023.json": "atari100k/published/DreamerV3_2023.json",
    "atari100k_SimPLe.json": "atari100k/rliable/SimPLe.json",
    "atari100k_DER.json": "atari100k/rliable/DER.json",
    "atari100k_OTRainbow.json": "atari100k/rliable/OTRainbow.json",
    "atari100k_DrQ.json": "atari100k/rliable/DrQ.json",
    "atari100k_DrQ_eps.json": "atari100k/rliable/DrQ(eps).json",
    "atari100k_SPR.json": "atari100k/rliable/SPR.json",
    "atari100k-dreamerv3.json.gz": "dreamerv3-scores/atari100k-dreamerv3.json.gz",
    **{
        f"dmc_vision-{m}.json.gz": f"dreamerv3-scores/dmc_vision-{m}.json.gz"
        for m in ("dreamerv3", "curl", "drqv2", "ppo_fixhp", "sac")
    },
    **{
        f"dmc_proprio-{m}.json.gz": f"dreamerv3-scores/dmc_proprio-{m}.json.gz"
        for m in ("dreamerv3", "d4pg", "ddpg", "dmpo", "mpo", "ppo_fixhp")
    },
}
GZIPPED = {
    "vsg_bbs_curves.json.gz": "vsg-scores/bbs_curves.json",
    "vsg_dmc_curves.json.gz": "vsg-scores/dmc_curves.json",
}


CURL_SOURCE = "atari100k/rliable/CURL_10_evals.json"


def curl_raw_returns(records: list[dict], source: Path) -> dict[str, list[float]]:
    """CURL_10_evals records {game, seed, HNS, Max HNS} -> dict game -> [raw return per seed, by seed].

    The file holds human-normalised scores (HNS, to 10 significant digits); we ship raw returns like every
    other final-score file, so the board normalises them with the same table. raw = random + HNS (human -
    random) lands within 1e-5 of a multiple of 0.01 for all 2,600 records (the returns are means of
    evaluation episodes), so we round to 0.01, after checking that it only removes the HNS rounding.
    """
    random = json.loads((source / "atari100k/published/RANDOM.json").read_text())
    human = json.loads((source / "atari100k/published/HUMAN.json").read_text())
    by_game: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        game, hns = record["game"], float(record["HNS"])  # the final score; "Max HNS" is the best evaluation
        low, high = random[game][0], human[game][0]
        raw = low + hns * (high - low)
        if abs(raw - round(raw, 2)) > 1e-4:
            raise ValueError(f"CURL {game} seed {record['seed']}: HNS {hns} is not a return on a 0.01 grid")
        by_game.setdefault(game, []).append((float(record["seed"]), round(raw, 2)))
    curl = {}
    for game, runs in sorted(by_game.items()):
        seeds = [seed for seed, _ in runs]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"CURL {game}: duplicate seeds in {CURL_SOURCE}")
        curl[game] = [raw for _, raw in sorted(runs)]
    return curl


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(source: Path) -> list[tuple[str, str, str]]:
    rows = []
    for name, relative in COPIES.items():
        data = (source / relative).read_bytes()
        (HERE / name).write_bytes(data)
        rows.append((name, relative, sha256(source / relative)))
    for name, relative in GZIPPED.items():
        data = (source / relative).read_bytes()
        json.loads(data)  # must be valid JSON
        (HERE / name).write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
        rows.append((name, relative, sha256(source / relative)))
    # CURL: the rliable paper's loader reads CURL_10_evals.json (the final HNS of 100 seeds per game), not the
    # per-game CURL/<Game>.json files (another evaluation: median 0.102 where the paper reports 0.092).
    curl_path = source / CURL_SOURCE
    curl = curl_raw_returns(json.loads(curl_path.read_text()), source)
    (HERE / "atari100k_CURL.json").write_text(json.dumps(curl, sort_keys=True) + "\n")
    rows.append(("atari100k_CURL.json", CURL_SOURCE, sha256(curl_path)))
    return rows


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m leaderboard.reference.build /path/to/reference-data")
    for row in build(Path(sys.argv[1])):
        print(" | ".join(row))
