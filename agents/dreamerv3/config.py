"""DreamerV3 hyperparameters (2024 version, upstream `configs.yaml`; defaults = the size200m model).

Nested frozen dataclasses; presets in presets.yaml override fields by dotted keys (`rssm.deter 2048`).
Run-level knobs (train_ratio, steps, replay capacity) live in the framework's `run`/`replay` sections.
Variants (THICK, VSG) extend these classes with their own fields (dataclass inheritance).
"""

from __future__ import annotations

import dataclasses

from bench.config import ranged


@dataclasses.dataclass(frozen=True)
class RSSMConfig:
    deter: int = ranged(8192, ge=1)  # deterministic state size
    hidden: int = ranged(1024, ge=1)  # width of the input projections and prior/posterior layers
    stoch: int = ranged(32, ge=1)  # categorical latent variables ...
    classes: int = ranged(64, ge=1)  # ... of this many classes each
    blocks: int = ranged(8, ge=1)  # block-diagonal GRU blocks
    dyn_layers: int = 1  # block-linear hidden layers of the GRU core
    img_layers: int = 2  # prior MLP layers on deter
    obs_layers: int = 1  # posterior MLP layers on [deter, tokens]
    unimix: float = ranged(0.01, ge=0, le=1)  # uniform mixture of the latent categoricals
    free_nats: float = ranged(1.0, ge=0)  # dyn and rep KL are each clipped below at this value
    absolute: bool = False  # posterior from tokens only (no deter)
    act: str = "silu"
    # `gaussian`: DreamerV1/2-style continuous latents of `stoch` dimensions (classes unused), std =
    # softplus(raw) + min_std, the same dyn/rep KL split with free nats. Default: DreamerV3's categoricals.
    latent: str = "categorical"
    min_std: float = ranged(0.1, gt=0)


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    depth: int = 64  # CNN channels = depth * mults[i]
    mults: tuple[int, ...] = (2, 3, 4, 4)
    kernel: int = 5
    minres: int = 4  # stages = log2(image size / minres): 4 for 64x64 images
    layers: int = 3  # vector MLP layers
    units: int = 1024
    symlog: bool = True  # symlog vector inputs
    act: str = "silu"


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    depth: int = 64
    mults: tuple[int, ...] = (2, 3, 4, 4)
    kernel: int = 5
    minres: int = 4
    layers: int = 3  # vector MLP layers
    units: int = 1024
    blocks: int = 8  # block-linear spatial projection of the wide latent part (upstream `bspace`)
    outscale: float = 1.0
    act: str = "silu"


@dataclasses.dataclass(frozen=True)
class RewardHeadConfig:
    layers: int = 1
    units: int = 1024
    bins: int = 255  # twohot bins at symexp(linspace(-20, 20))
    outscale: float = 0.0  # zero output layer: the prediction is exactly 0 at init
    act: str = "silu"


@dataclasses.dataclass(frozen=True)
class ContinueHeadConfig:
    layers: int = 1
    units: int = 1024
    outscale: float = 1.0
    act: str = "silu"


@dataclasses.dataclass(frozen=True)
class ActorConfig:
    layers: int = 3
    units: int = 1024
    outscale: float = 0.01
    unimix: float = ranged(0.01, ge=0, le=1)  # applied to categorical actions (upstream configures but ignores it; see Actor)
    min_std: float = ranged(0.1, gt=0)
    max_std: float = ranged(1.0, gt=0)
    entropy: float = ranged(3e-4, ge=0)  # entropy bonus scale
    eval_greedy: bool = False  # evaluation episodes take the mode instead of a sample (upstream samples)
    act: str = "silu"


@dataclasses.dataclass(frozen=True)
class CriticConfig:
    layers: int = 3
    units: int = 1024
    bins: int = 255
    outscale: float = 0.0
    slow_rate: float = ranged(0.02, gt=0, le=1)  # slow critic EMA rate per update
    slow_reg: float = 1.0  # regulariser towards the slow critic's prediction
    slow_target: bool = False  # bootstrap returns from the slow critic (upstream: False)
    act: str = "silu"


@dataclasses.dataclass(frozen=True)
class ImaginationConfig:
    horizon: int = ranged(15, ge=1)  # imagined steps from every posterior state
    lam: float = ranged(0.95, ge=0, le=1)
    discount_horizon: float = ranged(333.0, ge=1)  # gamma = 1 - 1/333, folded into the continue targets

    @property
    def discount(self) -> float:
        """gamma = 1 - 1 / discount_horizon."""
        return 1.0 - 1.0 / self.discount_horizon


@dataclasses.dataclass(frozen=True)
class ReturnNormConfig:
    rate: float = ranged(0.01, gt=0, le=1)
    limit: float = ranged(1.0, gt=0)  # scale = max(limit, p95 - p5)
    percentile_low: float = 5.0
    percentile_high: float = 95.0


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    lr: float = ranged(4e-5, gt=0)
    agc: float = ranged(0.3, ge=0)  # 0 turns clipping off
    pmin: float = ranged(1e-3, ge=0)
    beta1: float = ranged(0.9, ge=0, lt=1)
    beta2: float = ranged(0.999, ge=0, lt=1)
    eps: float = ranged(1e-20, gt=0)
    warmup: int = ranged(1000, ge=0)


@dataclasses.dataclass(frozen=True)
class LossScales:
    rec: float = 1.0  # decoder (all observation keys)
    rew: float = 1.0
    con: float = 1.0
    dyn: float = 1.0
    rep: float = 0.1
    policy: float = 1.0
    value: float = 1.0
    repval: float = 0.3


@dataclasses.dataclass(frozen=True)
class DreamerV3Config:
    batch_size: int = ranged(16, ge=1)
    batch_length: int = ranged(64, ge=2)
    replay_context: int = ranged(1, ge=0, le=1)  # leading steps whose stored latents initialise the carry (0 or 1)
    report_context: int = 8  # open-loop report: observed steps before imagining the rest
    reward_grad: bool = True  # reward and repval losses train the representation too
    repval: bool = True  # critic loss on replayed sequences
    # Actor objective: `reinforce` (DreamerV3, default) or `dynamics` (DreamerV1: backpropagate the lambda
    # return through the imagined trajectory into the actions; continuous actions; world model frozen for it).
    actor_grad: str = "reinforce"
    rssm: RSSMConfig = RSSMConfig()
    encoder: EncoderConfig = EncoderConfig()
    decoder: DecoderConfig = DecoderConfig()
    reward_head: RewardHeadConfig = RewardHeadConfig()
    cont_head: ContinueHeadConfig = ContinueHeadConfig()
    actor: ActorConfig = ActorConfig()
    critic: CriticConfig = CriticConfig()
    imagination: ImaginationConfig = ImaginationConfig()
    retnorm: ReturnNormConfig = ReturnNormConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    loss_scales: LossScales = LossScales()
    # float32 | bfloat16: the dtype of the update's matrix products (agents.common.nets `compute_dtype`);
    # parameters, optimizer state and recurrent states stay float32 either way. The policy step runs float32.
    compute_dtype: str = "float32"
