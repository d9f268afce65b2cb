"""World-model update time: Hieros' S5WM (parallel scan) against DreamerV3's RSSM (sequential scan).

    python scripts/perf_world_models.py [--batch 16 --length 64 --updates 5 --json out.json]

Both world models share everything but the dynamics: the same CNN encoder and decoder (Hieros' paper size:
depth 24, units 256), reward and continue heads, the same latent z (32 x 32 categoricals) and DreamerV3's loss
terms (reconstruction, reward, continue, KL dyn/rep); one Adam step on all of it. The S5WM has the paper's
sizes (width / deter / hidden 256, 8 S5 layers with N = 128); the RSSM rows use hidden 256 and deter 256
(same width) and deter 1024 (close to the S5WM's parameter count). Printed per row: dynamics parameters,
compile time, median update time over `--updates` runs after a warm-up. The paper's claim (reference
hieros_s5.md) is that the S5WM trains faster because its scan is parallel over time; the goal is <= 0.7x.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's packages, not an installed copy

from agents.common import distributions as dists
from agents.common.latents import categorical_kl_terms
from agents.common.nets import MLPHead, batched
from agents.common.observations import ObservationDecoder, ObservationEncoder
from agents.dreamerv3.rssm import RSSM
from agents.hieros.s5wm import S5WorldModel
from bench.spaces import Space

OBS = {"image": Space("uint8", (64, 64, 3), 0, 255)}
ACTIONS = 6


class WorldModel(eqx.Module):
    encoder: ObservationEncoder
    dynamics: eqx.Module
    decoder: ObservationDecoder
    reward: MLPHead
    cont: MLPHead
    kind: str = eqx.field(static=True)


def build(kind: str, deter: int, *, key) -> WorldModel:
    keys = jax.random.split(key, 5)
    encoder = ObservationEncoder(OBS, depth=24, mults=(2, 3, 4, 4), kernel=5, minres=4, layers=3, units=256, key=keys[0])
    if kind == "s5wm":
        dynamics = S5WorldModel(encoder.out_size, ACTIONS, key=keys[1])
        wide = dynamics.initial_deter.shape[0]
    else:
        dynamics = RSSM(encoder.out_size, ACTIONS, deter=deter, hidden=256, stoch=32, classes=32, key=keys[1])
        wide = deter
    features = wide + 32 * 32
    decoder = ObservationDecoder(OBS, features, wide, 32 * 32, depth=24, mults=(2, 3, 4, 4), kernel=5, minres=4,
                                 layers=3, units=256, blocks=8, key=keys[2])  # fmt: skip
    reward = MLPHead(features, 255, 256, 1, outscale=0.0, key=keys[3])
    cont = MLPHead(features, 1, 256, 1, key=keys[4])
    return WorldModel(encoder, dynamics, decoder, reward, cont, kind)


def loss(model: WorldModel, batch, key):
    tokens = model.encoder({"image": batch["image"]})
    b, t = batch["is_first"].shape
    if model.kind == "s5wm":
        world = model.dynamics
        initial = world.initial()
        _, post, prior = jax.vmap(lambda x, a, f, k: world.observe(initial, x, a, f, key=k))(
            tokens, batch["prev_actions"], batch["is_first"], jax.random.split(key, b)
        )
        stoch, deter = post["stoch"], post["deter"]
    else:
        _, post, prior = model.dynamics.observe(
            model.dynamics.initial(b), tokens, batch["prev_actions"], batch["is_first"], key=key
        )
        stoch, deter = post["stoch"], post["deter"]
    flat = stoch.reshape(b, t, -1)
    features = jnp.concatenate([flat, deter], -1)
    rec = model.decoder.loss(features, deter, flat, {"image": batch["image"]})["image"]
    rew = dists.twohot_loss(batched(model.reward, features), batch["reward"], dists.symexp_bins(255))
    con = dists.bernoulli_loss(batched(model.cont, features)[..., 0], batch["cont"])
    kl, _ = categorical_kl_terms(post["logits"], prior["logits"], 1.0)
    return (rec + rew + con + 0.5 * kl["dyn"] + 0.1 * kl["rep"]).mean()


def time_one(kind, deter, args):
    model = build(kind, deter, key=jax.random.PRNGKey(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = optax.adam(1e-4, eps=1e-8)
    opt_state = optimizer.init(params)

    @jax.jit
    def update(params, opt_state, batch, key):
        value, grads = jax.value_and_grad(lambda p: loss(eqx.combine(p, static), batch, key))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    rng = np.random.default_rng(0)
    shape = (args.batch, args.length)
    batch = {
        "image": rng.integers(0, 255, (*shape, 64, 64, 3)).astype(np.uint8),
        "prev_actions": np.eye(ACTIONS, dtype=np.float32)[rng.integers(0, ACTIONS, shape)],
        "is_first": np.zeros(shape, bool),
        "reward": rng.normal(size=shape).astype(np.float32),
        "cont": np.ones(shape, np.float32),
    }
    batch["is_first"][:, 0] = True
    start = time.perf_counter()
    compiled = update.lower(params, opt_state, batch, jax.random.PRNGKey(1)).compile()
    compile_s = time.perf_counter() - start
    params, opt_state, value = compiled(params, opt_state, batch, jax.random.PRNGKey(1))
    jax.block_until_ready(value)
    times = []
    for i in range(args.updates):
        start = time.perf_counter()
        params, opt_state, value = compiled(params, opt_state, batch, jax.random.PRNGKey(2 + i))
        jax.block_until_ready(value)
        times.append(time.perf_counter() - start)
    count = sum(x.size for x in jax.tree.leaves(eqx.filter(model.dynamics, eqx.is_inexact_array)))
    return {"model": kind if kind == "s5wm" else f"rssm deter {deter}", "dynamics_params": int(count),
            "compile_s": compile_s, "update_s": statistics.median(times), "loss": float(value)}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = [time_one("s5wm", 0, args), time_one("rssm", 256, args), time_one("rssm", 1024, args)]
    print(f"device: {jax.devices()[0].device_kind}; batch {args.batch} x length {args.length}")
    print("| world model | dynamics params | compile s | update s (median) | S5WM / this |")
    print("|---|---|---|---|---|")
    for row in rows:
        ratio = rows[0]["update_s"] / row["update_s"]
        print(f"| {row['model']} | {row['dynamics_params'] / 1e6:.2f} M | {row['compile_s']:.1f} | "
              f"{row['update_s']:.4f} | {ratio:.2f} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"device": jax.devices()[0].device_kind, "batch": args.batch, "length": args.length,
                       "rows": rows}, file, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
