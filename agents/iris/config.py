"""IRIS hyperparameters (upstream eloialonso/iris `config/*.yaml`; defaults = the Atari 100k setting).

Source for every default: /work/shared/reference/transformer_wm.md (IRIS section). Presets in presets.yaml
override fields by dotted keys (`world_model.layers 2`).

IRIS trains in epochs: each epoch collects `steps_per_epoch` env steps (200) and then gives each component
`updates_per_epoch` (200) gradient steps, once the epoch number exceeds the component's start epoch
(upstream `epoch > start_after_epochs`). Here the three components are three training streams: one update
per policy step each (ratio = batch x length), starting at agent step (start_epochs + 1) x steps_per_epoch.
"""

from __future__ import annotations

import dataclasses

from agents.iris.tokenizer import PERCEPTUAL


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    channels: int = 64
    mults: tuple[int, ...] = (1, 1, 1, 1, 1)  # 5 levels = 4 downsamplings: 64x64 -> 4x4 = 16 tokens
    res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (8, 16)
    z_channels: int = 512
    embed_dim: int = 512  # codebook vector size
    vocab: int = 512  # codebook entries
    beta: float = 1.0  # commitment weight
    # LPIPS stand-in (its VGG weights cannot be downloaded): "gradient" = L1 of image finite differences
    # (keeps edges sharp, as LPIPS does in IRIS) or "none"; see tokenizer.perceptual_loss.
    perceptual: str = "gradient"
    perceptual_scale: float = 1.0
    batch: int = 256  # frames per update
    start_epochs: int = 5
    # Ours, not IRIS's (0 = IRIS as published): for the first `warmup_updates` tokenizer updates the decoder
    # reads the encoder's output directly (a plain autoencoder, L1 loss only); the next update first sets the
    # codebook to `vocab` encodings of its batch, then trains IRIS's VQ tokenizer. On toy frames, where the
    # objects are a few pixels, VQ from the start collapses to the background (docs/iris.md).
    warmup_updates: int = 0
    # Ours, not IRIS's (0 = IRIS's plain L1): the L1 term weighs pixels that differ from the batch's median
    # frame (the static background) 1 + foreground_weight, the rest 1 (tokenizer.reconstruction_l1). On toy
    # frames plain L1 leaves reach's low-contrast goal out of the reconstruction (docs/iris.md).
    foreground_weight: float = 0.0

    def __post_init__(self):
        if self.foreground_weight < 0:
            raise ValueError(f"tokenizer.foreground_weight must be >= 0, got {self.foreground_weight}")
        if self.warmup_updates < 0:
            raise ValueError(f"tokenizer.warmup_updates must be >= 0, got {self.warmup_updates}")
        if self.perceptual not in PERCEPTUAL:
            raise ValueError(f"tokenizer.perceptual must be one of {PERCEPTUAL}, got {self.perceptual!r}")


@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
    steps: int = 20  # context and training sequence length in env steps (17 tokens each: 340 tokens)
    layers: int = 10
    heads: int = 4
    embed: int = 256
    dropout: float = 0.1  # embeddings, attention weights and residuals
    weight_decay: float = 0.01  # AdamW, on the Linear weights only (minGPT's grouping, as upstream)
    batch: int = 64
    start_epochs: int = 25


@dataclasses.dataclass(frozen=True)
class ActorCriticConfig:
    channels: tuple[int, ...] = (32, 32, 64, 64)  # 3x3 convs, each followed by 2x2 max-pooling
    lstm: int = 512
    burn_in: int = 20  # real frames (reconstructed by the tokenizer) that set the LSTM state before imagining
    horizon: int = 20
    gamma: float = 0.995
    lam: float = 0.95
    entropy: float = 0.001
    train_temperature: float = 1.0  # softmax temperature of the collecting policy
    eval_temperature: float = 0.5  # IRIS's test-time temperature (sampling, not argmax)
    batch: int = 64
    start_epochs: int = 50


@dataclasses.dataclass(frozen=True)
class IRISConfig:
    tokenizer: TokenizerConfig = TokenizerConfig()
    world_model: WorldModelConfig = WorldModelConfig()
    actor_critic: ActorCriticConfig = ActorCriticConfig()
    lr: float = 1e-4  # all three optimizers
    grad_clip: float = 10.0  # global-norm clipping, all three
    steps_per_epoch: int = 200  # env steps collected per IRIS epoch
    updates_per_epoch: int = 200  # gradient steps per component per epoch
    # IRIS's training-time episode choices, applied by the agent to what it trains on and to its policy
    # state (training only; evaluation episodes are untouched):
    # * a step with is_terminal ends the training episode: with the Atari protocol's life_loss_terminal
    #   (set by the atari100k preset) a lost life starts a new episode for the world model's sequences, the
    #   actor-critic's burn-in and the collecting LSTM, as IRIS's done_on_life_loss does;
    terminal_ends_episode: bool = True
    # * training episodes last at most this many agent steps (IRIS: 20k frames = 5000 steps at frame skip 4);
    #   the env keeps going (the runner owns episodes), the agent starts a new training episode. 0 = no cap.
    train_episode_steps: int = 5000

    def __post_init__(self):
        for name in ("steps_per_epoch", "updates_per_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.world_model.steps < 1 or self.actor_critic.horizon < 2:
            raise ValueError(
                f"world_model.steps {self.world_model.steps} must be >= 1 and actor_critic.horizon "
                f"{self.actor_critic.horizon} >= 2"
            )

    def start_step(self, start_epochs: int) -> int:
        """Agent step at which a component starts training: upstream trains it in epochs > start_epochs."""
        return (start_epochs + 1) * self.steps_per_epoch

    @property
    def updates_per_step(self) -> float:
        return self.updates_per_epoch / self.steps_per_epoch
