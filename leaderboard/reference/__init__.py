"""Published reference rows shipped with the suite: which file holds them, where it comes from, and the
protocol its numbers were produced under.

The data files sit next to this module (package data; `build.py` rebuilds them from the public score files
and `SOURCES.md` lists the source and SHA-256 of each). Three formats, read by `leaderboard.load`:

* `final_scores`: JSON `dict task -> [final score per run]` (raw game scores),
* `curves`: DreamerV3-style JSON list (optionally gzipped) of `{task, method, seed, xs, ys}`; a run's final
  score is the mean of its `ys` whose `xs` (env frames) lie in `(window_end - window, window_end]`,
* `table`: JSON `dict method -> task -> {mean, std}`: published means only. Such rows are shown, marked
  "table-only", and never enter bootstrap statistics.
"""

from __future__ import annotations

import dataclasses
from importlib import resources

FORMATS = ("final_scores", "curves", "table")


@dataclasses.dataclass(frozen=True)
class Reference:
    suite: str
    method: str  # the row's label on the leaderboard
    file: str  # package data file in leaderboard/reference/
    format: str  # one of FORMATS
    protocol: str  # evaluation protocol of the published numbers
    protocol_detail: str
    source: str
    note: str = ""
    key: str = ""  # method name inside a curves/table file
    task_names: str = "prefix"  # "atari": CamelCase game names; "prefix": strip `task_prefix`
    task_prefix: str = ""
    window_end: float = 0.0  # curves: env frames
    window: float = 0.0  # curves: env frames
    scale: float = 1.0  # published value * scale = the suite's score unit

    def path(self):
        return resources.files(__name__).joinpath(self.file)


_IRIS_PROTOCOL = "mean of 100 evaluation episodes after 100k agent steps"
_RLIABLE_SOURCE = (
    "rliable paper data (Agarwal et al., NeurIPS 2021), git mirror RLE-Foundation/rllte@ddd76d5 "
    "hsuanwu/evaluation/atari_100k/"
)
_RLIABLE_PROTOCOL = "final evaluation after 100k agent steps (as collected for the rliable paper)"


def _atari(method, file, source, protocol="final_eval", detail=_IRIS_PROTOCOL, note=""):
    return Reference(
        "atari100k", method, file, "final_scores", protocol, detail, source, note, task_names="atari"
    )


def _dmc_curve(suite, key, method, protocol, note=""):
    end, window = (1_000_000, 50_000) if suite == "dmc_vision" else (500_000, 25_000)
    return Reference(
        suite, method, f"{suite}-{key}.json.gz", "curves", protocol,
        f"mean of the published curve points in the last {window:,} of {end:,} env frames (5% of the budget)",
        f"danijar/dreamerv3 scores/{suite}-{key}.json.gz (Hafner et al., 2023/2025)", note, key=key,
        task_prefix="dmc_", window_end=end, window=window,
    )  # fmt: skip


# Where DreamerV3's published Atari runs left the 100k protocol (protocols.md); our flags that reproduce it.
_DREAMERV3_2024_NOTE = (
    "ran with sticky actions at p = 0.25: its wrapper sets repeat_action_probability after loadROM, which "
    "ALE ignores, so ALE's default 0.25 stayed on; like-for-like: --env.sticky_actions 0.25"
)
_DREAMERV3_2023_NOTE = (
    "its code resized frames with OpenCV INTER_AREA and drew 0-29 no-ops; like-for-like: --env.resize area "
    "--env.noops 29"
)
_DMC_BASELINE_NOTE = "baseline curve from DreamerV3's published score files; curve type (train/eval) unstated"

CATALOG: tuple[Reference, ...] = (
    # ----------------------------------------------------------------------------------- Atari 100k
    _atari("IRIS", "atari100k_IRIS.json", "eloialonso/iris results/data/IRIS.json (Micheli et al., ICLR 2023)"),
    _atari("DIAMOND", "atari100k_DIAMOND.json",
           "eloialonso/diamond results/data/DIAMOND.json (Alonso et al., NeurIPS 2024)"),
    _atari("STORM", "atari100k_STORM.json", "weipu-zhang/STORM results/storm.json (Zhang et al., NeurIPS 2023)",
           detail="evaluation episodes after 100k agent steps (authors' results file)",
           note="Freeway is 0 on all seeds in the authors' file; the paper's table reports 34"),
    _atari("TWM", "atari100k_TWM.json", "jrobine/twm results/scores.json (Robine et al., ICLR 2023)"),
    _atari("Delta-IRIS", "atari100k_DeltaIRIS.json",
           "vmicheli/delta-iris results/atari.json (Micheli et al., ICML 2024)",
           detail="evaluation episodes after 100k agent steps (authors' results file)"),
    _atari("DreamerV3 (2023)", "atari100k_DreamerV3_2023.json",
           "leor-c/REM results/data/dreamerv3.json (DreamerV3 arXiv v1 per-seed scores)",
           protocol="train_window",
           detail="mean of the training episodes ending in the last 10k env frames (390k-400k), DreamerV3's protocol",
           note=_DREAMERV3_2023_NOTE),
    Reference(
        "atari100k", "DreamerV3 (2024)", "atari100k-dreamerv3.json.gz", "curves", "train_window",
        "mean of the training episodes ending in (390k, 400k] env frames; runs with no episode ending "
        "there have no score and are left out (reported)",
        "danijar/dreamerv3 scores/atari100k-dreamerv3.json.gz (Hafner et al., Nature 2025)",
        _DREAMERV3_2024_NOTE, key="dreamerv3", task_prefix="atari_", window_end=400_000, window=10_000,
    ),
    _atari("SimPLe", "atari100k_SimPLe.json", _RLIABLE_SOURCE, detail=_RLIABLE_PROTOCOL),
    _atari("DER", "atari100k_DER.json", _RLIABLE_SOURCE, detail=_RLIABLE_PROTOCOL),
    _atari("OTRainbow", "atari100k_OTRainbow.json", _RLIABLE_SOURCE, detail=_RLIABLE_PROTOCOL),
    _atari("CURL", "atari100k_CURL.json", _RLIABLE_SOURCE + " CURL_10_evals.json", detail=_RLIABLE_PROTOCOL,
           note="the final HNS of seeds 1-100 per game from CURL_10_evals.json (the file the rliable paper's "
                "loader reads), shipped as raw returns; the per-game CURL/<Game>.json files differ"),
    _atari("DrQ", "atari100k_DrQ.json", _RLIABLE_SOURCE, detail=_RLIABLE_PROTOCOL),
    _atari("DrQ(eps)", "atari100k_DrQ_eps.json", _RLIABLE_SOURCE, detail=_RLIABLE_PROTOCOL),
    _atari("SPR", "atari100k_SPR.json", _RLIABLE_SOURCE, detail=_RLIABLE_PROTOCOL),
    # ------------------------------------------------------------------------------------------ DMC
    _dmc_curve("dmc_vision", "dreamerv3", "DreamerV3", "train_window"),
    _dmc_curve("dmc_vision", "drqv2", "DrQ-v2", "curve_window", _DMC_BASELINE_NOTE),
    _dmc_curve("dmc_vision", "curl", "CURL", "curve_window", _DMC_BASELINE_NOTE),
    _dmc_curve("dmc_vision", "sac", "SAC", "curve_window", _DMC_BASELINE_NOTE),
    _dmc_curve("dmc_vision", "ppo_fixhp", "PPO", "curve_window", _DMC_BASELINE_NOTE),
    _dmc_curve("dmc_proprio", "dreamerv3", "DreamerV3", "train_window"),
    _dmc_curve("dmc_proprio", "d4pg", "D4PG", "curve_window", _DMC_BASELINE_NOTE),
    _dmc_curve("dmc_proprio", "dmpo", "DMPO", "curve_window", _DMC_BASELINE_NOTE),
    _dmc_curve("dmc_proprio", "mpo", "MPO", "curve_window", _DMC_BASELINE_NOTE),
    _dmc_curve("dmc_proprio", "ddpg", "DDPG", "curve_window", _DMC_BASELINE_NOTE),
    _dmc_curve("dmc_proprio", "ppo_fixhp", "PPO", "curve_window", _DMC_BASELINE_NOTE),
    *(
        Reference(
            "dmc_vision", f"{method} (VSG paper)", "vsg_dmc_curves.json.gz", "curves", "curve_point",
            "the published curve point at 1M env frames (curves binned per 50k frames); runs that stop "
            "earlier have no score and are left out (reported)",
            "arnavkj1995/VSG scores/dmc_curves.json (Jain et al., NeurIPS 2022)",
            "12 of the 20 DMC vision tasks", key=method, task_prefix="dmc_", window_end=1_000_000,
            window=50_000,
        )
        for method in ("DreamerV1", "DreamerV2", "VSG", "SVSG")
    ),
    # ------------------------------------------------------------------------------- BringBackShapes
    *(
        Reference(
            "bbs", label, "vsg_bbs_curves.json.gz", "curves", "curve_point",
            "the published curve point at 2.4M env frames (curves binned per 100k frames) divided by the "
            "5 objects; runs that stop earlier have no score and are left out (reported)",
            "arnavkj1995/VSG scores/bbs_curves.json (Jain et al., NeurIPS 2022)",
            "called 'VSGC' in the score file" if key == "VSGC" else "",
            key=key, task_prefix="bringbackshapes_sparse_", window_end=2_400_000, window=100_000,
            scale=1 / 5,
        )
        for key, label in (("DreamerV2", "DreamerV2"), ("VSGC", "VSG"), ("SVSG", "SVSG"))
    ),
    # ---------------------------------------------------------------------------------------- Crafter
    *(
        Reference(
            "crafter", method, "crafter_scoreboard.json", "table", "crafter_score",
            "Crafter score over all training episodes within 1M env steps",
            "Crafter scoreboard (danijar/crafter README)", key=method,
        )
        for method in (
            "Human", "Curious Replay", "PPO (ResNet)", "DreamerV3", "LSTM-SPCNN", "EDE", "OC-SA",
            "DreamerV2", "PPO", "Rainbow", "Plan2Explore", "RND", "Random",
        )
    ),
)  # fmt: skip


def references_for(suite: str) -> list[Reference]:
    return [reference for reference in CATALOG if reference.suite == suite]
