"""Hieros hyperparameters. Defaults = the paper's Atari100k sweep setting (reference:
/work/shared/reference/hieros_s5.md, "Hyperparameters"): `atari100k s5_silu_act small_model_size
additional_inputs --max_hierarchy 3`.

Nested frozen dataclasses; presets (presets.yaml) override fields by dotted keys (`s5wm.deter 512`).
Run-level knobs (train_ratio, replay capacity) live in the framework's `run` / `replay` sections; level i's
stream trains with 4^-i of `run.train_ratio` (`StreamSpec.ratio_scale`).
"""

from __future__ import annotations

import dataclasses

from agents.dreamerv3.config import (
    ActorConfig,
    ContinueHeadConfig,
    CriticConfig,
    DecoderConfig,
    EncoderConfig,
    ReturnNormConfig,
    RewardHeadConfig,
)
from bench.config import ranged


@dataclasses.dataclass(frozen=True)
class S5WMConfig:
    """The S5 world model of every level (reference "S5WM")."""

    stoch: int = ranged(32, ge=1)  # categorical latents ...
    classes: int = ranged(32, ge=1)  # ... of this many classes
    hidden: int = ranged(256, ge=1)  # posterior / prior hidden width
    width: int = ranged(256, ge=1)  # model dimension of the S5 stack
    deter: int = ranged(256, ge=1)  # deterministic feature from the layers' states
    blocks: int = ranged(4, ge=1)  # double blocks (2 S5 layers each)
    state_size: int = ranged(128, ge=2)  # S5 state size N per layer (N / 2 complex states)
    ssm_blocks: int = ranged(4, ge=1)  # HiPPO blocks J
    dropout: float = ranged(0.0, ge=0, lt=1)
    unimix: float = ranged(0.01, ge=0, le=1)
    free_nats: float = ranged(1.0, ge=0)
    act: str = "silu"  # input, posterior and prior layers
    block_act: str = "silu"  # after each S5 layer's linear (upstream `s5_silu_act`; GELU without it)


@dataclasses.dataclass(frozen=True)
class LevelMLPConfig:
    """Encoder / decoder MLP of the levels above 0 (their observation is a vector of 4 lower latents)."""

    units: int = ranged(256, ge=1)
    layers: int = ranged(2, ge=1)


@dataclasses.dataclass(frozen=True)
class GoalConfig:
    """Subgoals: 8 one-hot categoricals of 8 classes through the goal autoencoder (reference "Hierarchy")."""

    stoch: int = ranged(8, ge=1)
    classes: int = ranged(8, ge=2)
    units: int = ranged(64, ge=1)  # the autoencoder MLPs: 3 layers of 64
    layers: int = ranged(3, ge=1)
    kl: float = ranged(0.5, ge=0)  # weight of KL(q(code | s) || uniform) in the autoencoder loss
    unimix: float = ranged(0.01, ge=0, le=1)


@dataclasses.dataclass(frozen=True)
class RewardWeights:
    """Advantage weights of the three reward types (reference "Hierarchy")."""

    extrinsic: float = 1.0
    subgoal: float = 0.3  # all levels but the top one
    novelty: float = 0.1  # levels above 0 only


@dataclasses.dataclass(frozen=True)
class ImaginationConfig:
    horizon: int = ranged(16, ge=1)
    lam: float = ranged(0.95, ge=0, le=1)
    discount: float = ranged(0.997, gt=0, le=1)  # folded into the continue targets


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Two Adam(W) groups per level, as upstream: the world model with the goal autoencoder, and the actor with
    its critics. Upstream builds AdamW without a weight_decay argument, so PyTorch's default 0.01 decays every
    parameter; `weight_decay` is 0 here and the atari100k preset restores upstream's 0.01."""

    model_lr: float = ranged(1e-4, gt=0)
    model_eps: float = ranged(1e-8, gt=0)
    model_clip: float = ranged(1000.0, gt=0)  # global-norm gradient clipping
    ac_lr: float = ranged(3e-5, gt=0)
    ac_eps: float = ranged(1e-5, gt=0)
    ac_clip: float = ranged(100.0, gt=0)
    warmup: int = ranged(1000, ge=0)
    weight_decay: float = ranged(0.0, ge=0)
    # > 0: the S5 layers' Lambda, B and log_step in their own group with this rate and no weight decay (the S5
    # reference's optimiser, hieros_s5.md "S5"); 0: they train with the model group (upstream Hieros)
    ssm_lr: float = ranged(0.0, ge=0)


@dataclasses.dataclass(frozen=True)
class LossScales:
    rec: float = 1.0
    rew: float = 1.0
    con: float = 1.0
    dyn: float = 0.5  # reference "S5WM": KL dyn 0.5, rep 0.1
    rep: float = 0.1
    goal: float = 1.0  # goal autoencoder
    policy: float = 1.0
    value: float = 1.0


@dataclasses.dataclass(frozen=True)
class HierosConfig:
    batch_size: int = ranged(16, ge=1)
    batch_length: int = ranged(64, ge=2)
    max_hierarchy: int = ranged(3, ge=1, le=4)  # levels; 1 = a flat S5WM agent
    # upstream's `additional_inputs` (its default, and in the Atari100k sweep): the actor and critics also read
    # symlog of the predicted reward, continue probability and latent entropy (hierarchy.policy_input)
    additional_inputs: bool = True
    period: int = ranged(4, ge=2)  # level i acts every period^i env steps and sees period lower latents
    report_context: int = 8
    slow_rate: float = ranged(0.02, gt=0, le=1)  # slow critics' EMA rate
    slow_reg: float = 1.0
    s5wm: S5WMConfig = S5WMConfig()
    encoder: EncoderConfig = EncoderConfig(depth=24, units=256)  # reference: CNN depth 24, units 256
    decoder: DecoderConfig = DecoderConfig(depth=24, units=256)
    level_mlp: LevelMLPConfig = LevelMLPConfig()
    goal: GoalConfig = GoalConfig()
    reward_head: RewardHeadConfig = RewardHeadConfig(units=256)
    cont_head: ContinueHeadConfig = ContinueHeadConfig(units=256)
    actor: ActorConfig = ActorConfig(units=256)
    critic: CriticConfig = CriticConfig(units=256)
    imagination: ImaginationConfig = ImaginationConfig()
    retnorm: ReturnNormConfig = ReturnNormConfig()
    rewards: RewardWeights = RewardWeights()
    optimizer: OptimizerConfig = OptimizerConfig()
    loss_scales: LossScales = LossScales()
