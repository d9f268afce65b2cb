"""THICK hyperparameters: DreamerV3's config plus the context, the high-level model and THICK Dreamer.

Defaults follow the THIX reimplementation on DreamerV3 where it has them (coarse KL scales, coarse decoder
scale 2, sparse_free 1) and the TF2 code otherwise (context size 16, psi 0.9, high-level action KL balance
0.8). `loss_scales.sparse` (beta) is set per suite in presets.yaml.
"""

from __future__ import annotations

import dataclasses

from agents.dreamerv3.config import DreamerV3Config, LossScales


@dataclasses.dataclass(frozen=True)
class ContextConfig:
    size: int = 16  # context dimensions (TF2 presets 16; THIX 8)
    gate_noise: float = 0.1  # std of the Gaussian noise on the gate pre-activation (always on)
    sparse_free: float = 1.0  # context changes per sequence that the sparsity loss does not penalise
    coarse_layers: int = 2  # MLP layers of the coarse prior on [proj(z), proj(a), c]


@dataclasses.dataclass(frozen=True)
class HighLevelConfig:
    actions: int = 3  # classes of the high-level action A (MiniHack/THIX 3; pinpad 5)
    units: int = 1024
    layers: int = 2
    bins: int = 255  # twohot bins of the time and reward heads
    kl_balance: float = (
        0.8  # weight of KL(sg(q) || p) in the high-level action KL; the rest on KL(q || sg(p))
    )


@dataclasses.dataclass(frozen=True)
class ThickDreamerConfig:
    """THICK Dreamer's critic targets: psi * lambda return + (1 - psi) * G, with one high-level step
    G = r_way + gamma^delta (r(s_tau) + cont(s_tau) V_coarse(s_tau)) (reference: thick.md, "THICK Dreamer").

    Deliberate differences from the TF2 code (on DreamerV2), kept on purpose:
    * `repval` (DreamerV3 2024's critic loss on replayed sequences; TF2 has none) bootstraps from the plain
      imagination lambda returns, not the psi-mixed targets: the mixing changes only the imagination critic
      targets, as in TF2, and the replayed-sequence term stays DreamerV3's.
    * delta in gamma^delta is the twohot mean of the predicted time, gamma^E[delta]; TF2 draws delta from its
      clamped-normal time head (`thick_time` is a sample). The mean gives a lower-variance target; by
      convexity gamma^E[delta] >= E[gamma^delta], so where the time is uncertain the discount on G is
      slightly milder than an average over samples.
    * gamma inside a segment is the fixed 1 - 1/discount_horizon (TF2: the predicted continue at tau raised
      to delta + 1; segments end at terminals, so the steps on the way cannot terminate).
    """

    enabled: bool = True  # mix long-horizon values into the critic targets (THICK Dreamer)
    psi: float = 0.9  # critic target = psi * lambda return + (1 - psi) * high-level return


@dataclasses.dataclass(frozen=True)
class ThickLossScales(LossScales):
    coarse_dyn: float = 1.0  # KL(sg(post) || coarse prior)
    coarse_rep: float = 0.1  # KL(post || sg(coarse prior))
    sparse: float = 1.0  # beta of the sparsity loss (set per suite)
    coarse_rec: float = 2.0  # coarse decoder on [z, c]
    coarse_rew: float = 1.0
    coarse_con: float = 1.0
    hl_state: float = 1.0
    hl_action: float = 1.0
    hl_time: float = 1.0
    hl_reward: float = 1.0
    hl_kl: float = 1.0
    coarse_value: float = 1.0  # the coarse critic (THICK Dreamer)


@dataclasses.dataclass(frozen=True)
class ThickConfig(DreamerV3Config):
    context: ContextConfig = ContextConfig()
    highlevel: HighLevelConfig = HighLevelConfig()
    thick_dreamer: ThickDreamerConfig = ThickDreamerConfig()
    loss_scales: ThickLossScales = ThickLossScales()


def check_config(config: ThickConfig) -> ThickConfig:
    """Raise a ValueError naming the field for THICK settings outside their range (DreamerV3's own fields
    have declared ranges, checked by bench.config.check_ranges when the config is resolved)."""
    if not isinstance(config, ThickConfig):
        raise TypeError(f"THICK needs a ThickConfig, got {type(config).__name__}")
    if not 0.0 <= config.thick_dreamer.psi <= 1.0:
        raise ValueError(f"thick_dreamer.psi must lie in [0, 1], got {config.thick_dreamer.psi}")
    if config.context.size < 1:
        raise ValueError(f"context.size must be positive, got {config.context.size}")
    if config.context.gate_noise < 0.0:
        raise ValueError(f"context.gate_noise must be >= 0, got {config.context.gate_noise}")
    if not 0.0 <= config.highlevel.kl_balance <= 1.0:
        raise ValueError(f"highlevel.kl_balance must lie in [0, 1], got {config.highlevel.kl_balance}")
    if config.highlevel.actions < 1:
        raise ValueError(f"highlevel.actions must be >= 1, got {config.highlevel.actions}")
    return config
