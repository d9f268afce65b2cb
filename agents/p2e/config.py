"""Plan2Explore hyperparameters: DreamerV3's config plus the ensemble and the exploration actor-critic.

Plan2Explore (Sekar et al., ICML 2020) as DreamerV2 and DreamerV3 (2023 release) ship it; facts read in the
public `danijar/dreamerv2` `expl.py`/`configs.yaml` and `danijar/dreamerv3` (commit 8fa35f83) `expl.py` /
`configs.yaml` (the 2024 DreamerV3 no longer has it; not in /work/shared/reference):
* ensemble of 8 heads (DreamerV3 `disag_models: 8`; DreamerV2 10), 5 x 1024 SiLU MLPs on [deter, stoch,
  action] predicting the next `stoch` (`disag_target: stoch` in both);
* the exploration actor-critic learns from the intrinsic reward only (DreamerV2 `expl_intr_scale: 1`,
  `expl_extr_scale: 0`; DreamerV3 2023 mixes `{extr: 1.0, disag: 0.1}`: set `expl.extr_scale`);
* the task actor-critic learns from the extrinsic reward of the same world model (it is DreamerV3's).
"""

from __future__ import annotations

import dataclasses

from agents.dreamerv3.config import DreamerV3Config, LossScales
from bench.config import ranged

ACTORS = ("expl", "task")
TARGETS = ("stoch", "features")


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    members: int = ranged(8, ge=2)  # K one-step models; the variance over them needs K >= 2
    units: int = ranged(1024, ge=1)
    layers: int = ranged(5, ge=0)
    act: str = "silu"
    # What each member predicts at t+1 from [features_t, action_t]: the next categorical latent ("stoch",
    # upstream) or the next full features [deter, stoch] ("features").
    target: str = "stoch"


@dataclasses.dataclass(frozen=True)
class ExplorationConfig:
    intr_scale: float = ranged(1.0, ge=0)  # weight of the disagreement in the exploration reward
    extr_scale: float = ranged(0.0, ge=0)  # weight of the predicted extrinsic reward in it
    train_actor: str = "expl"  # the actor that collects training data: "expl" or "task"
    eval_actor: str = "task"  # the actor of evaluation episodes: "task" or "expl"
    # True (upstream): the exploration returns stop where the world model predicts a terminal. False: they
    # ignore the predicted terminals (continue = the discount alone), as RND's non-episodic intrinsic returns
    # (Burda et al., ICLR 2019). An episodic explorer learns to avoid terminal states, which cut its intrinsic
    # return, so its data hold few of them (toy keydoor's door; docs/thick_planet.md, "Eighth run").
    episodic: bool = True


@dataclasses.dataclass(frozen=True)
class P2ELossScales(LossScales):
    disag: float = 1.0  # ensemble regression (sum over members and target dims)
    expl_policy: float = 1.0  # exploration actor
    expl_value: float = 1.0  # exploration critic


@dataclasses.dataclass(frozen=True)
class P2EConfig(DreamerV3Config):
    ensemble: EnsembleConfig = EnsembleConfig()
    expl: ExplorationConfig = ExplorationConfig()
    loss_scales: P2ELossScales = P2ELossScales()


def check_config(config: P2EConfig) -> P2EConfig:
    """Raise a ValueError naming the field for a choice outside its options."""
    if not isinstance(config, P2EConfig):
        raise TypeError(f"Plan2Explore needs a P2EConfig, got {type(config).__name__}")
    for name in ("train_actor", "eval_actor"):
        if getattr(config.expl, name) not in ACTORS:
            raise ValueError(f"expl.{name} must be one of {ACTORS}, got {getattr(config.expl, name)!r}")
    if config.ensemble.target not in TARGETS:
        raise ValueError(f"ensemble.target must be one of {TARGETS}, got {config.ensemble.target!r}")
    return config


def base_config(config: P2EConfig) -> DreamerV3Config:
    """The DreamerV3 part of the config (world model + task actor-critic), with DreamerV3's own loss scales."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(DreamerV3Config)}
    scales = {f.name: getattr(config.loss_scales, f.name) for f in dataclasses.fields(LossScales)}
    return DreamerV3Config(**{**fields, "loss_scales": LossScales(**scales)})
