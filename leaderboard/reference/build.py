"""Rebuild the shipped reference data from a checkout of the public score files (maintainers only).

    python -m leaderboard.reference.build /path/to/reference-data

`reference-data` holds copies of public files (see `SOURCES.md` for where each comes from). Files are copied
byte for byte, except: CURL's per-game run files become one `dict game -> [runs]` file, and the VSG curve
files are gzipped (deterministically, mtime 0). `SOURCES.md` records the SHA-256 of every input.
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
    # CURL: one record file per game (run_number, eval_average_return) -> dict game -> [runs by run_number]
    curl = {}
    for path in sorted((source / "atari100k/rliable/CURL").glob("*.json")):
        records = sorted(json.loads(path.read_text()), key=lambda r: r["run_number"])
        curl[path.stem] = [float(r["eval_average_return"]) for r in records]
    (HERE / "atari100k_CURL.json").write_text(json.dumps(curl, sort_keys=True) + "\n")
    digest = hashlib.sha256(
        b"".join(sha256(p).encode() for p in sorted((source / "atari100k/rliable/CURL").glob("*.json")))
    ).hexdigest()
    rows.append(
        (
            "atari100k_CURL.json",
            "atari100k/rliable/CURL/<Game>.json (26 files)",
            f"{digest} (of the 26 digests)",
        )
    )
    return rows


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m leaderboard.reference.build /path/to/reference-data")
    for row in build(Path(sys.argv[1])):
        print(" | ".join(row))
