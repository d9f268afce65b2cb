"""THICK PlaNet (Gumbsch et al., ICLR 2024): zero-shot planning with a trained THICK world model.

Two evaluation-only agents (no training streams) that load a finished THICK run (`--agent.model RUN_DIR`:
its config.yaml and latest checkpoint) and plan at every step from the filtered C-RSSM state:

* `thick_planet` (reference: thick.md, "THICK PlaNet"; TF2 `thick/hl_mcts.py` HierarchicalPlanner):
  1. High level, when there is no goal yet, or when a posterior context gate opens and more than
     `replan_after` steps passed since the last plan (TF2 `hl_replan_inhibt_t` 3): MCTS (planning.mcts)
     over the high-level actions A from the coarse state (z, c). One tree edge is one high-level step:
     p(A | z, c) is the prior; the high-level model predicts z_{tau-1} (sampled), a_{tau-1}, delta and the
     reward on the way; one coarse C-RSSM step gives (z_tau, c_tau). Edge reward r_way + gamma^delta r(s_tau),
     discount gamma^delta cont(s_tau), as THICK Dreamer's long-horizon return (agent.py). A leaf is worth its
     own edge reward (TF2: the leaf's value is its reward; `leaf_value: zero` turns that off; `leaf_value:
     critic` uses THICK Dreamer's coarse critic V(z_tau, c_tau), MuZero's leaf evaluation). The goal is the
     predicted pre-change state z_{tau-1} (its probabilities) of the chosen root action (TF2
     `hl_plan_pre_ll_goal: True`); `goal: post_change` takes the coarse prior's z_tau after the change instead
     (TF2 `hl_plan_pre_ll_goal: False`).
  2. Low level, every step: CEM (planning.cem) over action sequences of `cem.horizon` steps imagined with the
     fine prior; objective = mean predicted reward (each weighted by the predicted probability that the episode
     still runs: `continue_weight`, ours) + `goal_bonus` (0.025) x mean cosine similarity between
     the categorical probabilities of the imagined z_t and of the goal (averaged over the latent groups;
     TF2 `cat_prob_cosine_sim_seq`, goal distance 'logit'). The first action of the plan is executed.
* `cem_planet`: the same CEM on the same model with the reward alone (PlaNet's planner; THICK's flat baseline).

THICK's planner is for continuous actions only; discrete action keys are planned with CEM's categorical
part (planning.py), so the toy and MiniHack tasks work too.

`--agent.model untrained` plans with a freshly initialised THICK `debug` model: for smoke tests only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from agents.common import distributions as dists
from agents.common.actions import ActionLayout
from agents.common.behaviour import policy_sample
from agents.common.observations import split_keys
from agents.dreamerv3 import DreamerV3, Networks
from agents.thick.agent import ThickWorldModel, make_thick
from agents.thick.config import ThickConfig
from agents.thick.gatel0rd import context_changed
from agents.thick.planning import CEMConfig, MCTSConfig, cem, mcts
from bench.api import AbstractAgent, AgentSpec
from bench.spaces import Space

UNTRAINED = "untrained"
LEAF_VALUES = ("reward", "zero", "critic")
GOALS = ("pre_change", "post_change")


@dataclasses.dataclass(frozen=True)
class PlanetConfig:
    """The flat CEM planner (`cem_planet`)."""

    model: str = ""  # a finished THICK run folder (config.yaml, ckpt/), or "untrained" (smoke tests only)
    cem: CEMConfig = CEMConfig()  # 1000 candidates, horizon 12, top 100, 10 iterations (thick.md)
    reward_scale: float = 1.0  # weight of the mean predicted reward (TF2 cem.reward_factor)
    # Ours, not THICK's: weight each imagined reward by the predicted probability that the episode still runs
    # (the continue head's product over the earlier imagined steps, as Dreamer's imagined returns; the head
    # learns (1 - terminal) x gamma, so this also discounts by gamma^(t-1)). THICK's
    # Multiworld tasks never terminate; on tasks that do, CEM otherwise chases the rewards a model imagines
    # after a terminal (docs/thick_planet.md). `false` is THICK's plain mean.
    continue_weight: bool = True


@dataclasses.dataclass(frozen=True)
class ThickPlanetConfig(PlanetConfig):
    """THICK PlaNet (`thick_planet`): MCTS over high-level actions picks the goal, CEM reaches for it."""

    mcts: MCTSConfig = MCTSConfig()  # 100 simulations, Dirichlet 0.25, fraction 0.25 (thick.md)
    goal_bonus: float = 0.025  # weight of the goal similarity in the CEM objective (TF2 cem.bonus_factor)
    replan_after: int = 3  # replan on an open gate only when more steps than this passed (TF2 hl_replan_inhibt_t)
    # A new leaf is worth: "reward" its edge reward (TF2); "zero" nothing; "critic" the model's coarse critic
    # V(z_tau, c_tau) (ours: MuZero's value-network leaf; THICK Dreamer trains that critic on the same data)
    leaf_value: str = "reward"
    # The CEM's goal: "pre_change" the predicted state z_{tau-1} before the context change (THICK's setting);
    # "post_change" the coarse prior's z_tau after it (TF2 hl_plan_pre_ll_goal: False)
    goal: str = "pre_change"


class PlanetState(eqx.Module):
    nets: Networks  # the THICK model's networks (loaded; never trained here)


class Planet(AbstractAgent):
    """Evaluation-only planner on a THICK world model; `hierarchical` selects THICK PlaNet or flat CEM."""

    config: PlanetConfig
    obs_space: Mapping[str, Space]
    act_space: Mapping[str, Space]
    thick: DreamerV3  # the THICK agent the model belongs to (configuration only)
    model_envs: int = eqx.field(static=True)  # env workers of the model's run (shape of its saved carry)
    hierarchical: bool = eqx.field(static=True)

    @property
    def layout(self) -> ActionLayout:
        return ActionLayout.from_spaces(self.act_space)

    # ----------------------------------------------------------------------------------------- API

    def init(self, *, key: PRNGKeyArray) -> PlanetState:
        model = self.config.model
        if not model:
            raise ValueError(f"{self._name()} needs a THICK model: --agent.model RUN_DIR (a finished THICK run)")
        state = self.thick.init(key=key)
        if model != UNTRAINED:
            from bench.checkpoint import Checkpointer

            checkpointer = Checkpointer(Path(model) / "ckpt")
            if not checkpointer.exists():
                raise FileNotFoundError(f"agent.model {model}: no checkpoint (ckpt/LATEST) in that folder")
            header = checkpointer.load_header()
            carry = self.thick.initial_carry(state, self.model_envs)
            state, _ = checkpointer.load_agent(header, (state, carry))
        return PlanetState(nets=state.nets)

    def initial_carry(self, state: PlanetState, batch_size: int) -> dict:
        dynamics = state.nets.dynamics
        crssm = dynamics.crssm
        return {
            "latent": dynamics.initial(batch_size),
            "action": jnp.zeros((batch_size, self.layout.size), jnp.float32),
            "goal": jnp.zeros((batch_size, crssm.stoch, crssm.classes), jnp.float32),  # logits of the goal z
            "has_goal": jnp.zeros((batch_size,), bool),
            "since_plan": jnp.zeros((batch_size,), jnp.int32),  # steps since the last high-level plan
        }

    def act(self, state: PlanetState, carry: dict, obs: Mapping[str, Array], *, key: PRNGKeyArray,
            mode: str) -> tuple[dict, dict, dict]:  # fmt: skip
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        nets = state.nets
        dynamics: ThickWorldModel = nets.dynamics
        observe_key, mcts_key, cem_key = jax.random.split(key, 3)
        images, vectors = split_keys(self.obs_space)
        tokens = nets.encoder({k: obs[k] for k in images + vectors})
        is_first = jnp.asarray(obs["is_first"], bool)
        latent, posteriors, _ = dynamics.observe(
            carry["latent"], tokens[:, None], carry["action"][:, None], is_first[:, None], key=observe_key
        )
        batch = is_first.shape[0]
        goal = jnp.where(is_first[:, None, None], 0.0, carry["goal"])
        has_goal = carry["has_goal"] & ~is_first
        since_plan = jnp.where(is_first, 0, carry["since_plan"])

        if self.hierarchical:
            config: ThickPlanetConfig = self.config
            gate_open = context_changed(posteriors["gates"][:, 0]) > 0
            # TF2: replan when sum(gates) > 0 and len(inter_goals) > hl_replan_inhibt_t, where inter_goals
            # holds one entry per step since the last plan, the planning step included.
            replan = ~has_goal | (gate_open & (since_plan + 1 > config.replan_after))

            def search(_):
                keys = jax.random.split(mcts_key, batch)
                return jax.vmap(self._search, in_axes=(None, 0, 0, 0))(
                    nets, latent["stoch"], latent["context"], keys
                )

            new_goal = jax.lax.cond(replan.any(), search, lambda _: goal, None)
            goal = jnp.where(replan[:, None, None], new_goal, goal)
            has_goal = has_goal | replan
            since_plan = jnp.where(replan, 0, since_plan)
            bonus = config.goal_bonus
        else:
            bonus = 0.0

        plans = jax.vmap(self._plan, in_axes=(None, 0, 0, None, 0))(
            nets, latent, goal, bonus, jax.random.split(cem_key, batch)
        )
        action = plans[:, 0]
        new_carry = {
            "latent": latent, "action": action, "goal": goal, "has_goal": has_goal,
            "since_plan": since_plan + 1,
        }  # fmt: skip
        return new_carry, self.layout.to_env(action), {}

    def update(self, state: PlanetState, stream: str, batch: dict, *, key: PRNGKeyArray):
        raise ValueError(f"{self._name()} does not train (it has no streams); got an update for {stream!r}")

    def report(self, state: PlanetState, batch: dict, *, key: PRNGKeyArray) -> dict:
        return {}

    def streams(self) -> dict:
        return {}

    # ----------------------------------------------------------------------------------- planning

    def _name(self) -> str:
        return "thick_planet" if self.hierarchical else "cem_planet"

    def _search(self, nets: Networks, stoch: Float[Array, "S K"], context: Float[Array, " C"],
                key: PRNGKeyArray) -> Float[Array, "S K"]:  # fmt: skip
        """MCTS over high-level actions from one coarse state; returns the goal's logits (`goal`)."""
        config: ThickPlanetConfig = self.config
        dynamics: ThickWorldModel = nets.dynamics
        root = {"stoch": stoch, "context": context, "goal": jnp.zeros_like(stoch), "reward": jnp.zeros(())}
        prior_fn = lambda node: dynamics.highlevel.prior_logits(
            dynamics.crssm.coarse_features(node["stoch"], node["context"])
        )
        step_fn = lambda node, hl_action, step_key: highlevel_transition(
            dynamics, node["stoch"], node["context"], hl_action, key=step_key,
            post_change_goal=config.goal == "post_change",
        )
        value_fn = self._leaf_value(nets)
        result = mcts(root, prior_fn=prior_fn, step_fn=step_fn, value_fn=value_fn,
                      num_actions=dynamics.highlevel.hl_actions, config=config.mcts, key=key)  # fmt: skip
        return result.child_state["goal"]

    def _leaf_value(self, nets: Networks):
        """The value of a new MCTS leaf (a node of `highlevel_transition`), by `leaf_value`."""
        leaf_value = self.config.leaf_value
        if leaf_value == "reward":
            return lambda node: node["reward"]
        if leaf_value == "critic":
            coarse_features = nets.dynamics.crssm.coarse_features
            return lambda node: nets.behaviour.coarse_value(coarse_features(node["stoch"], node["context"]))
        return lambda node: jnp.zeros((), jnp.float32)

    def _plan(self, nets: Networks, latent: dict, goal: Float[Array, "S K"], bonus: float,
              key: PRNGKeyArray) -> Float[Array, "H A"]:  # fmt: skip
        """CEM from one fine latent (h, z, c); returns the plan (H, A) in policy space."""
        reward_bins = dists.symexp_bins(self.thick.config.reward_head.bins)
        goal_probs = jnp.exp(goal)

        def objective(actions, objective_key):
            rewards, continues, similarity = imagine_sequence(
                nets, latent, actions, goal_probs, reward_bins, key=objective_key
            )
            reward = planning_reward(rewards, continues, self.config.continue_weight)
            return self.config.reward_scale * reward + bonus * similarity.mean()

        return cem(objective, self.layout, self.config.cem, key=key).plan


def highlevel_transition(dynamics: ThickWorldModel, stoch: Float[Array, "S K"], context: Float[Array, " C"],
                         hl_action: Float[Array, " A"], *, key: PRNGKeyArray,
                         post_change_goal: bool = False):  # fmt: skip
    """One high-level step as an MCTS edge: (next node, reward, discount).

    The node holds (z_tau, c_tau) for the next search step, the goal (the logits of z_{tau-1}, or with
    `post_change_goal` those of the coarse prior's z_tau) and its edge reward (for the leaf value).
    reward = r_way + gamma^delta r(s_tau); discount = gamma^delta cont(s_tau): THICK Dreamer's long-horizon
    return with the value of s_tau left to the search (agent.py).
    """
    state_key, action_key, coarse_key = jax.random.split(key, 3)
    hl_bins = dists.symexp_bins(dynamics.hl_bins)
    features = dynamics.crssm.coarse_features(stoch, context)[None]
    prediction = jax.vmap(dynamics.highlevel.predict)(features, hl_action[None])
    state_before = dists.Categorical(prediction.state_logits).sample(state_key)  # TF2 mcts.state_sample
    action_before = policy_sample(prediction.action, dynamics.layout, action_key)
    time = jnp.maximum(dists.twohot_mean(prediction.time_logits, hl_bins), 0.0)
    reward_way = dists.twohot_mean(prediction.reward_logits, hl_bins)
    stoch_after, context_after, logits_after = dynamics.crssm.coarse_step(
        state_before, context[None], action_before, key=coarse_key
    )
    after = dynamics.crssm.coarse_features(stoch_after, context_after)
    reward_after = dists.twohot_mean(jax.vmap(dynamics.coarse.reward)(after), dists.symexp_bins(dynamics.reward_bins))
    cont_after = jax.nn.sigmoid(jax.vmap(dynamics.coarse.cont_logit)(after))
    decay = dynamics.discount**time
    node = {
        "stoch": stoch_after[0], "context": context_after[0],
        "goal": (logits_after if post_change_goal else prediction.state_logits)[0],
        "reward": (reward_way + decay * reward_after)[0],
    }  # fmt: skip
    return node, node["reward"], (decay * cont_after)[0]


def imagine_sequence(nets: Networks, latent: dict, actions: Float[Array, "H A"], goal_probs: Float[Array, "S K"],
                     reward_bins: Float[Array, " K"], *, key: PRNGKeyArray) -> tuple[Array, Array, Array]:  # fmt: skip
    """Imagine one action sequence with the fine prior from one latent: the predicted rewards (H,), continue
    probabilities (H,) and the cosine similarity of each imagined z's categorical probabilities to the goal's,
    averaged over groups (H,)."""
    crssm = nets.dynamics.crssm

    def step(current, inputs):
        action, step_key = inputs
        noise_key, sample_key = jax.random.split(step_key)
        noise = jax.random.normal(noise_key, (crssm.context,), jnp.float32)
        deter, context, _, _ = crssm._transition_one(current["deter"], current["stoch"], current["context"], action, noise)
        logits = crssm._prior_one(deter, context)
        stoch = dists.sample_onehot(sample_key, logits)
        new = {"deter": deter, "stoch": stoch, "context": context}
        features = crssm.features(new)
        reward = dists.twohot_mean(nets.reward(features), reward_bins)
        cont = jax.nn.sigmoid(nets.cont(features)[0])
        return new, (reward, cont, group_cosine(jnp.exp(logits), goal_probs))

    start = {k: latent[k] for k in ("deter", "stoch", "context")}
    horizon = actions.shape[0]
    _, (rewards, continues, similarity) = jax.lax.scan(step, start, (actions, jax.random.split(key, horizon)))
    return rewards, continues, similarity


def planning_reward(rewards: Float[Array, " H"], continues: Float[Array, " H"], continue_weight: bool) -> Array:
    """CEM's reward term: the mean of the imagined rewards r_1..r_H; with `continue_weight`, r_t counts
    c_1 ... c_{t-1}, the continue head's outputs on the earlier imagined steps (the probability that none
    ended the episode, times gamma^(t-1): the head learns (1 - terminal) x gamma); the reward of the terminal
    step itself counts in full."""
    if not continue_weight:
        return rewards.mean()
    alive = jnp.cumprod(jnp.concatenate([jnp.ones((1,), continues.dtype), continues[:-1]]))
    return (alive * rewards).mean()


def group_cosine(p: Float[Array, "S K"], q: Float[Array, "S K"]) -> Float[Array, ""]:
    """Mean over the S latent groups of the cosine similarity of two categorical probability vectors."""
    dot = (p * q).sum(-1)
    norms = jnp.linalg.norm(p, axis=-1) * jnp.linalg.norm(q, axis=-1)
    return (dot / jnp.maximum(norms, 1e-12)).mean()


# -------------------------------------------------------------------------------------------- loading


def _model_config(model: str) -> tuple[ThickConfig, int]:
    """The THICK config and env count of the model: a run folder's config.yaml, or THICK's `debug` preset."""
    from bench import config as config_lib
    from bench import registry

    if not model or model == UNTRAINED:
        from agents.thick import SPEC as THICK_SPEC
        from tasks import toy

        return registry.build_config(THICK_SPEC, toy.SUITE, ["debug"]).agent, 1
    path = Path(model) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"agent.model {model}: no config.yaml there (give the folder of a finished THICK run)")
    saved = config_lib.load_yaml(path)
    try:
        config = config_lib.from_dict(ThickConfig, saved.get("agent") or {})
    except config_lib.ConfigError as error:
        raise ValueError(f"agent.model {model} is not a THICK run: its agent config does not fit THICK's ({error})") from None
    return config, int((saved.get("run") or {}).get("envs", 1))


def _make(config: PlanetConfig, obs_space: Mapping[str, Space], act_space: Mapping[str, Space], *,
          hierarchical: bool) -> Planet:  # fmt: skip
    if config.cem.top > config.cem.candidates or config.cem.top < 1:
        raise ValueError(f"cem.top must lie in [1, cem.candidates], got {config.cem.top} of {config.cem.candidates}")
    if hierarchical and config.leaf_value not in LEAF_VALUES:
        raise ValueError(f"leaf_value must be one of {LEAF_VALUES}, got {config.leaf_value!r}")
    if hierarchical and config.goal not in GOALS:
        raise ValueError(f"goal must be one of {GOALS}, got {config.goal!r}")
    thick_config, envs = _model_config(config.model)
    thick = make_thick(thick_config, obs_space, act_space)
    return Planet(config, dict(obs_space), dict(act_space), thick, envs, hierarchical)


def make_thick_planet(config: ThickPlanetConfig, obs_space, act_space) -> Planet:
    return _make(config, obs_space, act_space, hierarchical=True)


def make_cem_planet(config: PlanetConfig, obs_space, act_space) -> Planet:
    return _make(config, obs_space, act_space, hierarchical=False)


THICK_PLANET_SPEC = AgentSpec(
    name="thick_planet",
    config_cls=ThickPlanetConfig,
    make=make_thick_planet,
    presets=("agents.thick:planet_presets.yaml", "agents.thick:thick_planet_presets.yaml"),
    description="THICK PlaNet: zero-shot planning with a trained THICK model (--agent.model RUN_DIR): MCTS over "
    "high-level actions picks a sub-goal, CEM over low-level actions reaches for it; evaluation only.",
)

CEM_PLANET_SPEC = AgentSpec(
    name="cem_planet",
    config_cls=PlanetConfig,
    make=make_cem_planet,
    presets=("agents.thick:planet_presets.yaml",),
    description="Flat CEM planning (PlaNet's planner) on a trained THICK model (--agent.model RUN_DIR), reward "
    "only; THICK PlaNet's baseline; evaluation only.",
)
