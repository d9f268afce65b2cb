"""IRIS (Micheli, Alonso, Fleuret, ICLR 2023) in Equinox: tokenizer, GPT world model, imagining actor-critic.

Reference: /work/shared/reference/transformer_wm.md (IRIS section). Three components, three training streams
(`streams`), each with its own optimizer, batch shape and start step:

1. `tokenizer` (batches of single frames): the discrete autoencoder's loss, L1 + perceptual stand-in +
   codebook/commitment (tokenizer.py).
2. `world_model` (sequences of `steps` transitions): frames become tokens (frozen tokenizer); the GPT reads
   [frame tokens, action] per step and is trained with cross-entropy on the next frame's tokens, the sign of
   the reward and termination, masked to the transitions of the sequence's first training episode.
3. `actor_critic` (`burn_in` real frames + one start frame): the LSTM policy reads tokenizer reconstructions
   of the burn-in frames, then imagines `horizon` steps from the start frame: the GPT samples reward,
   termination and the next frame token by token with a KV cache; the policy sees decoded frames. Loss:
   REINFORCE with the lambda return minus the value as advantage, an entropy bonus, and value regression
   on the lambda returns.

Acting: the tokenizer reconstructs the observed frame (encode + decode), the CNN + LSTM actor-critic samples
at temperature `train_temperature` (training) or `eval_temperature` (evaluation, IRIS: 0.5).

Choices and deviations, each documented where it happens: the perceptual loss is a stand-in for LPIPS (no
pretrained weights here); windows are sampled by the runner's sampler (IRIS weights recent episodes); the
world model's stream is listed first so that `report` gets whole sequences; imagination runs without
dropout (IRIS puts the world model in eval mode before training the actor-critic).

Batch shards (`run.batch_shards`, agents/common/shards.py): the GPT's dropout keys are per sequence
(`shards.split`), imagination's samples are batch draws, the masked cross-entropies and the tokenizer's
foreground-weighted L1 are whole-batch means (its median frame, and the codebook drawn at the end of the
warm-up, read the whole batch), and the gradient and metrics are the parts' means;
tests/test_batch_shards_streams.py compares the two forms of an update of each stream.
"""

from __future__ import annotations

from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from agents.common import distributions as dists
from agents.common import shards
from agents.common.returns import lambda_return
from agents.iris.config import IRISConfig
from agents.iris.tokenizer import Tokenizer, conv
from agents.iris.transformer import (
    WorldModelGPT,
    generate_step,
    generate_step_recompute,
    sequence_logits,
    start_from_frame,
    start_recompute,
)
from bench.api import AbstractAgent, ImaginationCase, StreamSpec
from bench.spaces import Space

sg = jax.lax.stop_gradient

STREAMS = ("world_model", "tokenizer", "actor_critic")
# How imagination feeds the GPT: (start, step) over a KV cache (training) or over a token buffer whose full
# context is recomputed for every token (the baseline `bench perf agent` times the cache against).
GENERATORS = {
    "kv_cache": (start_from_frame, generate_step),
    "recompute": (start_recompute, generate_step_recompute),
}
SEGMENT_START = "segment_start"  # act extra: this step begins a training episode (is_first, life loss, cap)


class ActorCritic(eqx.Module):
    """IRIS's policy and value: 3x3 convs with 2x2 max-pooling, an LSTM, linear actor and critic heads."""

    convs: tuple[eqx.nn.Conv2d, ...]
    lstm: eqx.nn.LSTMCell
    actor: eqx.nn.Linear
    critic: eqx.nn.Linear

    def __init__(self, resolution: int, channels: tuple[int, ...], hidden: int, actions: int, *,
                 key: PRNGKeyArray):  # fmt: skip
        if resolution % 2 ** len(channels):
            levels = len(channels)
            raise ValueError(f"image size {resolution} is not divisible by 2^{levels} (actor-critic convs)")
        keys = jax.random.split(key, len(channels) + 3)
        cins = (3, *channels[:-1])
        self.convs = tuple(eqx.nn.Conv2d(i, o, 3, padding=1, key=k) for i, o, k in zip(cins, channels, keys))
        flat = channels[-1] * (resolution // 2 ** len(channels)) ** 2
        self.lstm = eqx.nn.LSTMCell(flat, hidden, key=keys[-3])
        self.actor = eqx.nn.Linear(hidden, actions, key=keys[-2])
        self.critic = eqx.nn.Linear(hidden, 1, key=keys[-1])

    def __call__(self, frames: Float[Array, "B H W 3"], state: tuple[Array, Array]):
        """Frames in [0, 1] -> (action logits (B, A), values (B,), new LSTM states (B, hidden) x 2).

        The convs run on the whole channel-last batch with a weight gradient that stays fast inside the
        imagination's loop (tokenizer.conv)."""
        x = frames * 2.0 - 1.0
        for layer in self.convs:
            x = conv(layer, x, trained_in_loop=True)
            b, h, w, c = x.shape
            x = jax.nn.relu(x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4)))
        # Flattened channel-first, (C, H, W), as upstream's `x.flatten(start_dim=1)` (the LSTM's input order).
        state = jax.vmap(self.lstm)(jnp.moveaxis(x, -1, 1).reshape(x.shape[0], -1), state)
        return jax.vmap(self.actor)(state[0]), jax.vmap(self.critic)(state[0])[:, 0], state


class IRISState(eqx.Module):
    tokenizer: Tokenizer
    world_model: WorldModelGPT
    actor_critic: ActorCritic
    opt: dict[str, PyTree]  # one optimizer state per stream
    updates: dict[str, Int[Array, ""]]


def _linear_weights(tree) -> list:
    linears = jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, eqx.nn.Linear))
    return [x.weight for x in linears if isinstance(x, eqx.nn.Linear)]


class IRIS(AbstractAgent):
    config: IRISConfig
    obs_space: Mapping[str, Space]
    act_space: Mapping[str, Space]

    # ------------------------------------------------------------------------------------ helpers

    @property
    def resolution(self) -> int:
        return self.obs_space["image"].shape[0]

    @property
    def num_actions(self) -> int:
        return self.act_space["action"].num_classes

    @property
    def frame_tokens(self) -> int:
        return (self.resolution // 2 ** (len(self.config.tokenizer.mults) - 1)) ** 2

    def _optimizer(self, stream: str, params=None) -> optax.GradientTransformation:
        c = self.config
        if stream == "world_model":
            # AdamW decays only the Linear weights (minGPT's parameter groups, as upstream).
            mask = lambda p: eqx.tree_at(  # noqa: E731
                _linear_weights, jax.tree.map(lambda _: False, p), replace_fn=lambda _: True
            )
            inner = optax.adamw(c.lr, weight_decay=c.world_model.weight_decay, mask=mask)
        else:
            inner = optax.adam(c.lr)
        return optax.chain(optax.clip_by_global_norm(c.grad_clip), inner)

    def _build(self, key: PRNGKeyArray) -> tuple[Tokenizer, WorldModelGPT, ActorCritic]:
        c = self.config
        t, w, a = c.tokenizer, c.world_model, c.actor_critic
        k1, k2, k3 = jax.random.split(key, 3)
        tokenizer = Tokenizer(
            resolution=self.resolution, channels=t.channels, mults=t.mults, res_blocks=t.res_blocks,
            attn_resolutions=t.attn_resolutions, z_channels=t.z_channels, embed_dim=t.embed_dim,
            vocab=t.vocab, beta=t.beta, perceptual=t.perceptual, perceptual_scale=t.perceptual_scale, key=k1,
            foreground_weight=t.foreground_weight,
        )  # fmt: skip
        world_model = WorldModelGPT(
            vocab=t.vocab, actions=self.num_actions, frame_tokens=self.frame_tokens, max_steps=w.steps,
            embed=w.embed, layers=w.layers, heads=w.heads, dropout=w.dropout, key=k2,
        )  # fmt: skip
        actor_critic = ActorCritic(self.resolution, a.channels, a.lstm, self.num_actions, key=k3)
        return tokenizer, world_model, actor_critic

    def _component(self, state: IRISState, stream: str):
        return getattr(state, stream)  # the state's fields are named after the streams

    def _reconstruct(self, tokenizer: Tokenizer, images: Array) -> Float[Array, "N H W 3"]:
        """What the policy sees of a real frame: the tokenizer's reconstruction in [0, 1]."""
        return sg(tokenizer.decode(tokenizer.encode(images)))

    # ---------------------------------------------------------------------------------------- API

    def init(self, *, key: PRNGKeyArray) -> IRISState:
        components = dict(zip(("tokenizer", "world_model", "actor_critic"), self._build(key)))
        opt = {name: self._optimizer(name).init(eqx.filter(components[name], eqx.is_inexact_array))
               for name in STREAMS}  # fmt: skip
        return IRISState(**components, opt=opt, updates={name: jnp.zeros((), jnp.int32) for name in STREAMS})

    def initial_carry(self, state, batch_size: int) -> dict:
        hidden = self.config.actor_critic.lstm
        return {
            "lstm": (jnp.zeros((batch_size, hidden)), jnp.zeros((batch_size, hidden))),
            "steps": jnp.zeros((batch_size,), jnp.int32),  # steps into the current training episode
            "restart": jnp.zeros((batch_size,), bool),  # the previous step ended a training episode
        }

    def act(self, state: IRISState, carry: dict, obs: Mapping[str, Array], *, key: PRNGKeyArray,
            mode: str) -> tuple[dict, dict, dict]:  # fmt: skip
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        c = self.config
        start = jnp.asarray(obs["is_first"], bool) | carry["restart"]
        lstm = jax.tree.map(lambda x: jnp.where(start[:, None], 0.0, x), carry["lstm"])
        steps = jnp.where(start, 0, carry["steps"] + 1)
        frames = self._reconstruct(state.tokenizer, obs["image"])
        logits, _, lstm = state.actor_critic(frames, lstm)
        temperature = c.actor_critic.train_temperature if mode == "train" else c.actor_critic.eval_temperature
        action = jax.random.categorical(key, logits / temperature).astype(jnp.int32)
        # IRIS's training-episode rules apply to training only; evaluation episodes run to the env's end.
        restart = jnp.zeros_like(start)
        if mode == "train":
            if c.terminal_ends_episode:
                restart = restart | jnp.asarray(obs["is_terminal"], bool)
            if c.train_episode_steps > 0:
                restart = restart | (steps + 1 >= c.train_episode_steps)
        new_carry = {"lstm": lstm, "steps": steps, "restart": restart}
        return new_carry, {"action": action}, {SEGMENT_START: start}

    def update(self, state: IRISState, stream: str, batch: Mapping[str, Array], *, key: PRNGKeyArray):
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}; IRIS trains {STREAMS}")
        loss_fn = {
            "tokenizer": self._tokenizer_loss,
            "world_model": self._world_model_loss,
            "actor_critic": self._actor_critic_loss,
        }[stream]
        if stream == "tokenizer" and self.config.tokenizer.warmup_updates > 0:
            key, codebook_key = jax.random.split(key)
            state = self._end_tokenizer_warmup(state, batch, codebook_key)
        params, static = eqx.partition(self._component(state, stream), eqx.is_inexact_array)
        (total, metrics), grads = jax.value_and_grad(
            lambda p: loss_fn(eqx.combine(p, static), state, batch, key=key), has_aux=True
        )(params)
        # Under batch shards each part took the loss over its rows: the whole batch's gradient, loss and metrics
        # are the parts' means (agents/common/shards.py).
        grads, total, metrics = shards.mean((grads, total, metrics))
        with jax.numpy_dtype_promotion("standard"):  # optax's bias correction: float ** int32 step count
            updates, opt_state = self._optimizer(stream).update(grads, state.opt[stream], params)
        component = eqx.combine(optax.apply_updates(params, updates), static)
        state = eqx.tree_at(lambda s: self._component(s, stream), state, component)
        state = eqx.tree_at(lambda s: (s.opt[stream], s.updates[stream]), state,
                            (opt_state, state.updates[stream] + 1))  # fmt: skip
        # The runner prefixes each stream's metrics with the stream name.
        metrics = {**metrics, "loss": total, "grad_norm": optax.global_norm(grads)}
        return state, metrics, {}

    # --------------------------------------------------------------------------------- 1. tokenizer

    def _tokenizer_loss(self, tokenizer: Tokenizer, state: IRISState, batch, *, key):
        images = jnp.asarray(batch["image"])
        warmup = state.updates["tokenizer"] < self.config.tokenizer.warmup_updates
        terms, _ = tokenizer.loss(images.reshape(-1, *images.shape[2:]), warmup)
        return sum(terms.values()), {**terms, "warmup": warmup.astype(jnp.float32)}

    def _end_tokenizer_warmup(self, state: IRISState, batch, key: PRNGKeyArray) -> IRISState:
        """`tokenizer.warmup_updates` (ours): the first update after the plain-autoencoder warm-up sets the
        codebook to encodings of its batch, so VQ starts from codes the decoder already reads."""
        images = jnp.asarray(batch["image"])
        at_end = state.updates["tokenizer"] == self.config.tokenizer.warmup_updates
        codebook = jax.lax.cond(  # the encoder pass runs only at that one update
            at_end,
            lambda: state.tokenizer.codebook_from(images.reshape(-1, *images.shape[2:]), key),
            lambda: state.tokenizer.codebook,
        )
        return eqx.tree_at(lambda s: s.tokenizer.codebook, state, codebook)

    # ------------------------------------------------------------------------------- 2. world model

    def _world_model_loss(self, world_model: WorldModelGPT, state: IRISState, batch, *, key):
        """Cross-entropy on next-frame tokens, reward sign and termination over `steps` transitions.

        Row t holds frame t, the action taken there, and the reward / is_terminal that arrived with frame t;
        so transition t's labels are row t + 1's reward sign and is_terminal (the window has steps + 1 rows).
        """
        steps = self.config.world_model.steps
        images = jnp.asarray(batch["image"])
        b, rows = images.shape[:2]
        if rows != steps + 1:
            raise ValueError(f"world-model batch: {rows} steps per sequence, not steps + 1 = {steps + 1}")
        frames = images[:, :steps].reshape(-1, *images.shape[2:])
        tokens = sg(state.tokenizer.encode(frames)).reshape(b, steps, -1)
        actions = jnp.asarray(batch["action"], jnp.int32)[:, :steps]
        labels = transition_labels(batch, steps, self.frame_tokens)
        keys = shards.split(key, b)  # a dropout key per sequence
        one_sequence = shards.per_row(lambda f, a, k: sequence_logits(world_model, f, a, key=k))
        logits = jax.vmap(one_sequence)(tokens, actions, keys)
        # Means over the masked-in entries of the whole batch (upstream: ignore_index -100).
        terms = {
            **shards.masked_means({"obs": _nll(logits["obs"], tokens)}, labels["frame_mask"].astype(jnp.float32)),
            **shards.masked_means({name: _nll(logits[name], labels[name]) for name in ("reward", "end")},
                                  labels["alive"].astype(jnp.float32)),
        }  # fmt: skip
        metrics = {**terms, "alive_fraction": labels["alive"].mean()}
        return sum(terms.values()), metrics

    # ------------------------------------------------------------------------------ 3. actor-critic

    def _actor_critic_loss(self, actor_critic: ActorCritic, state: IRISState, batch, *, key):
        a = self.config.actor_critic
        trajectory = self._imagine(actor_critic, state, batch, key=key)
        # (B, H, ...) each
        logits, values, actions = trajectory["logits"], trajectory["value"], trajectory["action"]
        reward, end = trajectory["reward"], trajectory["end"].astype(jnp.float32)
        returns = iris_lambda_returns(reward, end, sg(values), a.gamma, a.lam)  # (B, H - 1)
        returns = sg(returns)
        values = values[:, :-1]
        log_probs = jax.nn.log_softmax(logits[:, :-1])
        chosen = jnp.take_along_axis(log_probs, actions[:, :-1, None], -1)[..., 0]
        entropy = -(jnp.exp(log_probs) * log_probs).sum(-1)
        terms = {
            "policy": -(chosen * (returns - sg(values))).mean(),
            "entropy": -a.entropy * entropy.mean(),
            "value": jnp.mean((values - returns) ** 2),
        }
        metrics = {
            **terms,
            "entropy_nats": entropy.mean(),
            "imagined_reward": reward.mean(),
            "imagined_end": end.mean(),
            "return": returns.mean(),
            "value_mean": values.mean(),
        }
        return sum(terms.values()), metrics

    def _burn_in(self, actor_critic: ActorCritic, state: IRISState, batch) -> tuple[Array, Array]:
        """LSTM state after the reconstructed burn-in frames (no gradient, as upstream), reset at every start
        of a training episode so it only carries the start frame's episode."""
        images = jnp.asarray(batch["image"])
        b, rows = images.shape[:2]
        burn_in = rows - 1
        hidden = self.config.actor_critic.lstm
        lstm = (jnp.zeros((b, hidden)), jnp.zeros((b, hidden)))
        if burn_in == 0:
            return lstm
        frames = self._reconstruct(state.tokenizer, images[:, :burn_in].reshape(-1, *images.shape[2:]))
        frames = frames.reshape(b, burn_in, *frames.shape[1:])
        # A start at the start frame itself (row burn_in) also clears everything before it.
        start = jnp.asarray(batch[SEGMENT_START], bool)

        def step(lstm, inputs):
            frame, first = inputs
            lstm = jax.tree.map(lambda x: jnp.where(first[:, None], 0.0, x), lstm)
            _, _, lstm = actor_critic(frame, lstm)
            return lstm, None

        lstm, _ = jax.lax.scan(step, lstm, (jnp.swapaxes(frames, 0, 1), start[:, :burn_in].T))
        lstm = jax.tree.map(lambda x: jnp.where(start[:, burn_in, None], 0.0, x), lstm)
        return jax.tree.map(sg, lstm)

    def _imagine(self, actor_critic: ActorCritic, state: IRISState, batch, *, key,
                 generator: str = "kv_cache") -> dict[str, Array]:  # fmt: skip
        """`horizon` imagined steps from each sequence's last frame (IRIS `ActorCritic.imagine`).

        Returns (B, H) rewards in {-1, 0, 1}, ends, actions, values and (B, H, A) logits; the policy's
        gradients flow through its CNN and LSTM over the whole horizon; the world model and tokenizer are
        frozen (their outputs are stopped). `generator` names a `GENERATORS` entry.
        """
        a = self.config.actor_critic
        start_context, generate = GENERATORS[generator]
        images = jnp.asarray(batch["image"])
        lstm = self._burn_in(actor_critic, state, batch)
        tokens = sg(state.tokenizer.encode(images[:, -1]))
        context, length = start_context(state.world_model, tokens)
        frame = sg(state.tokenizer.decode(tokens))

        def step(carry, step_key):
            lstm, context, length, tokens, frame = carry
            policy_key, world_key = jax.random.split(step_key)
            logits, value, lstm = actor_critic(frame, lstm)
            action = dists.categorical_sample(policy_key, logits).astype(jnp.int32)
            # Generating the frame after the last action is wasted work upstream skips; the scan keeps one
            # body, so it is generated and dropped.
            out, context, length = generate(state.world_model, context, length, tokens, action, key=world_key)
            next_frame = sg(state.tokenizer.decode(out["frame_tokens"]))
            record = {"logits": logits, "value": value, "action": action, "reward": out["reward"]}
            record["end"] = out["end"]
            return (lstm, context, length, out["frame_tokens"], next_frame), record

        carry = (lstm, context, length, tokens, frame)
        _, trajectory = jax.lax.scan(step, carry, jax.random.split(key, a.horizon))
        return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), trajectory)

    def imagination_benchmark(self, batches: Mapping[str, dict]) -> dict[str, ImaginationCase]:
        """`bench perf agent`'s imagination timing (bench.api.ImaginationCase), on the actor-critic's batch:

        * `imagine/*`: the actor-critic's whole imagination (burn-in, policy, token-by-token generation,
          decoding) with the KV cache, and with the full context recomputed for every generated token;
        * `world_model/*`: the GPT's generation alone, `horizon` steps from each sequence's last frame under
          uniformly random actions, with and without the cache.
        """
        batch = batches["actor_critic"]
        horizon = self.config.actor_critic.horizon
        steps = batch["image"].shape[0] * horizon

        def imagine(generator):
            return lambda state, batch, key: self._imagine(state.actor_critic, state, batch, key=key,
                                                           generator=generator)  # fmt: skip

        def generate_only(generator):
            start_context, generate = GENERATORS[generator]

            def fn(state, frames, key):
                tokens = state.tokenizer.encode(frames)
                context, length = start_context(state.world_model, tokens)

                def step(carry, step_key):
                    context, length, tokens = carry
                    action_key, world_key = jax.random.split(step_key)
                    action = jax.random.randint(action_key, tokens.shape[:1], 0, self.num_actions)
                    out, context, length = generate(state.world_model, context, length, tokens, action,
                                                    key=world_key)  # fmt: skip
                    return (context, length, out["frame_tokens"]), out["reward"]

                return jax.lax.scan(step, (context, length, tokens), jax.random.split(key, horizon))[1]

            return fn

        frames = batch["image"][:, -1]
        return {
            "imagine/kv_cache": ImaginationCase(imagine("kv_cache"), batch, steps),
            "imagine/recompute": ImaginationCase(imagine("recompute"), batch, steps),
            "world_model/kv_cache": ImaginationCase(generate_only("kv_cache"), frames, steps),
            "world_model/recompute": ImaginationCase(generate_only("recompute"), frames, steps),
        }

    # ------------------------------------------------------------------------------------ report

    def report(self, state: IRISState, batch: Mapping[str, Array], *, key: PRNGKeyArray) -> dict:
        """Tokenizer reconstructions (truth | reconstruction) and an open-loop rollout: from each sequence's
        first frame the world model generates the following frames under the replayed actions, as a video
        (truth | imagined) and a still strip (truth over imagined, time left to right). uint8 images
        (H, W, 3) and videos (T, H, W, 3); up to 4 sequences."""
        images = jnp.asarray(batch["image"])
        rows = min(4, images.shape[0])
        images = images[:rows]
        steps = images.shape[1]
        truth = images.astype(jnp.float32) / 255.0
        flat = images.reshape(-1, *images.shape[2:])
        terms, recon = state.tokenizer.loss(flat)
        out = {f"tokenizer/{k}": v for k, v in terms.items()}
        pairs = jnp.concatenate([truth.reshape(recon.shape), recon], 2)  # (N, H, 2W, 3)
        out["reconstructions"] = _to_uint8(jnp.concatenate(list(pairs[: 4 * rows]), 0))
        if steps > 1:
            actions = jnp.asarray(batch["action"], jnp.int32)[:rows]
            tokens = state.tokenizer.encode(images[:, 0])
            cache, length = start_from_frame(state.world_model, tokens)

            def step(carry, inputs):
                cache, length, tokens = carry
                action, step_key = inputs
                gpt = state.world_model
                out, cache, length = generate_step(gpt, cache, length, tokens, action, key=step_key)
                return (cache, length, out["frame_tokens"]), out["frame_tokens"]

            _, generated = jax.lax.scan(
                step, (cache, length, tokens), (actions[:, :-1].T, jax.random.split(key, steps - 1))
            )
            generated = jnp.concatenate([tokens[None], generated], 0)  # (T, rows, K)
            imagined = jax.vmap(state.tokenizer.decode)(generated)  # (T, rows, H, W, 3)
            real = jnp.swapaxes(truth, 0, 1)
            out["imagination_l1"] = jnp.abs(imagined[1:] - real[1:]).mean()
            video = jnp.concatenate([real, imagined], 3)  # (T, rows, H, 2W, 3)
            out["imagination"] = _to_uint8(jnp.concatenate(list(jnp.swapaxes(video, 0, 1)), 1))
            # The same rollout as one still image: per sequence a row of real frames over a row of imagined
            # ones, time running left to right.
            strip = jnp.stack([real, imagined], 2).transpose(1, 2, 3, 0, 4, 5)  # (rows, 2, H, T, W, 3)
            h, w = real.shape[2:4]
            out["imagination_strip"] = _to_uint8(strip.reshape(rows * 2 * h, steps * w, 3))
        return out

    def streams(self) -> dict[str, StreamSpec]:
        """World model first (so `report` gets sequences), then tokenizer and actor-critic; one update per
        policy step each at IRIS's rates (200 per 200 collected steps), from IRIS's start epochs."""
        c = self.config
        t, w, a = c.tokenizer, c.world_model, c.actor_critic
        per_step = c.updates_per_step
        return {
            # steps + 1 rows: the last row carries the reward and termination of the last transition.
            "world_model": StreamSpec(w.batch, w.steps + 1, ratio=per_step * w.batch * (w.steps + 1),
                                      start=c.start_step(w.start_epochs)),  # fmt: skip
            "tokenizer": StreamSpec(t.batch, 1, ratio=per_step * t.batch, start=c.start_step(t.start_epochs)),
            "actor_critic": StreamSpec(a.batch, 1, context=a.burn_in, ratio=per_step * a.batch,
                                       start=c.start_step(a.start_epochs)),  # fmt: skip
        }


def transition_labels(batch: Mapping[str, Array], steps: int, frame_tokens: int) -> dict[str, Array]:
    """World-model targets and masks of a (B, steps + 1) window.

    Row t holds frame t, the action taken there, and the reward / is_terminal that arrived with frame t, so
    transition t (frame t, action t) is labelled with row t + 1's reward sign (class 0, 1, 2 = -1, 0, +1) and
    is_terminal. `alive[b, t]`: transition t belongs to the training episode of row 0, which ends at a row
    with is_last or before a row where act started a new one (`segment_start`: life loss, step cap).
    `frame_mask[b, t, k]`: frame t's token k is a label: frame 0's tokens 1.. always (they condition on
    frame 0 only), frame t >= 1 where transition t - 1 is alive; frame 0's token 0 has no predictor.
    """
    start = jnp.asarray(batch[SEGMENT_START], bool)[:, : steps + 1]
    ends = jnp.asarray(batch["is_last"], bool)[:, :steps] | start[:, 1:]
    alive = jnp.cumprod(~ends, axis=1).astype(bool)
    b = alive.shape[0]
    frame_mask = jnp.concatenate([jnp.ones((b, 1), bool), alive[:, :-1]], 1)[..., None]
    frame_mask = jnp.broadcast_to(frame_mask, (b, steps, frame_tokens)).at[:, 0, 0].set(False)
    reward = jnp.sign(jnp.asarray(batch["reward"], jnp.float32)[:, 1 : steps + 1])
    return {
        "reward": (reward + 1).astype(jnp.int32),
        "end": jnp.asarray(batch["is_terminal"], jnp.int32)[:, 1 : steps + 1],
        "alive": alive,
        "frame_mask": frame_mask,
    }


def iris_lambda_returns(reward: Float[Array, "B H"], end: Float[Array, "B H"], value: Float[Array, "B H"],
                        gamma: float, lam: float) -> Float[Array, "B H-1"]:  # fmt: skip
    """IRIS `compute_lambda_returns`, where reward[:, t] and end[:, t] follow action t:

        G_t = r_t + (1 - d_t) gamma ((1 - lam) V_{t+1} + lam G_{t+1}),   G_{H-1} = V_{H-1},

    and returns G_0 .. G_{H-2}.

    `lambda_return` indexes rewards by the step they lead into, so they are shifted by one.
    """
    pad = jnp.zeros_like(reward[:, :1])
    rewards = jnp.concatenate([pad, reward[:, :-1]], 1)
    discounts = jnp.concatenate([pad, (1.0 - end[:, :-1]) * gamma], 1)
    return lambda_return(rewards, discounts, value, lam)


def _nll(logits: Float[Array, "*s V"], labels: Int[Array, "*s"]) -> Float[Array, "*s"]:
    """The cross-entropy of each entry."""
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], -1)[..., 0]


def _to_uint8(x: Array) -> Array:
    return jnp.clip(jnp.round(x * 255.0), 0, 255).astype(jnp.uint8)


def make_agent(config: IRISConfig, obs_space: Mapping[str, Space], act_space: Mapping[str, Space]) -> IRIS:
    """The AgentSpec `make`: checks that the task has what IRIS reads (an RGB image, one discrete action)."""
    obs_space, act_space = dict(obs_space), dict(act_space)
    image = obs_space.get("image")
    if image is None or len(image.shape) != 3 or image.shape[0] != image.shape[1] or image.shape[2] != 3:
        raise ValueError(f"IRIS needs a square RGB 'image' observation, got {image}")
    action = act_space.get("action")
    if set(act_space) != {"action"} or action.shape != () or not action.is_discrete:
        raise ValueError(f"IRIS needs exactly one discrete 'action', got the action space {act_space}")
    levels = len(config.tokenizer.mults) - 1
    if image.shape[0] % 2**levels:
        raise ValueError(f"image size {image.shape[0]} is not divisible by 2^{levels} (tokenizer.mults)")
    return IRIS(config, obs_space, act_space)
