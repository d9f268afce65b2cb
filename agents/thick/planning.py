"""Planning for THICK PlaNet: CEM over low-level action sequences and MuZero-style MCTS over high-level actions.

Both are pure JAX functions of model callables, jittable, with fixed shapes (so they run under `jax.jit` and
`jax.vmap` over environments). Settings are THICK's (reference: thick.md, "THICK PlaNet"; TF2
`thick/configs.yaml` `cem` and `mcts`).

CEM (`cem`): a distribution over action sequences (H, A) in the policy space of an `ActionLayout`:
continuous parts are independent normals (mean 0, std 1 at the start; samples clipped to [-1, 1]), discrete
parts independent categoricals per step (uniform at the start; samples are one-hot). Each iteration draws
`candidates` sequences, scores them with `objective(actions, key)` (vmapped over candidates), and refits the
distribution to the `top` best: mean and std (+1e-6 in the variance, as the TF2 code) of the continuous
parts, class frequencies of the discrete parts. The plan is the final mean (continuous) and the most frequent
class (discrete); the caller executes its first step. THICK's PlaNet is continuous only; the categorical
part is our addition so that the same planner runs on discrete tasks.

MCTS (`mcts`): MuZero's search over a fixed number of high-level actions, in arrays: node 0 is the root, each
simulation adds one node. A node stores the reward and discount of the transition into it, its visit count,
value sum, the prior over its children, and its model state. One simulation:

    select   from the root, descend by  argmax_a  Q_norm(s, a) + c P(s, a) sqrt(N(s)) / (1 + N(s, a))
             with Q(s, a) = r(s') + d(s') V(s') for visited children (V the mean backed-up value), else 0
    expand   the first unexpanded edge: (s', r, d) = step(s, a); P(s', .) = softmax(prior(s')); v = value(s')
    backup   for the nodes on the path, leaf first: value_sum += g, N += 1, and for every node but the root
             MinMaxStats.update(r(node) + d(node) V(node)); then g = r(node) + d(node) g

Q is normalised to [0, 1] by the min and max of the Q values in the tree (MuZero's MinMaxStats, as the MuZero
paper defines it, Appendix B). Two upstream faults are fixed: the THICK code takes the maximum for the
minimum (so the minimum never falls and the normalisation is wrong), and it feeds the stats the node values
V(node), as MuZero's pseudocode does, while normalising Q = r + d V: with rewards on the edges the two
scales differ, normalised Q leaves [0, 1], and one rewarding child visited first can hold the search (seen
on a value-less trap model: a 0.2-reward dead end got 11 of the first simulations at normalised Q 2; the
hand-traced test pins the Q form). Before the first simulation the root is backed up once with value 0
(as THICK does: it makes N(root) = 1, so the priors break the first tie) and the root's prior is mixed with
Dirichlet(alpha) noise by `exploration_fraction`. The chosen action is sampled from softmax(N(root, a) / T)
(THICK: a softmax over raw visit counts, T = 1). The exploration constant c is 1 as in the THICK code
(MuZero's c1 + log((N + c2 + 1) / c2) is 1.25 at these visit counts).

Deliberate difference: the leaf's value is `value(s')` (0 for zero-shot planning without a critic); THICK's
code uses the leaf's own reward as its value, counting that reward twice on the way up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from agents.common.actions import ActionLayout

# ------------------------------------------------------------------------------------------------- CEM


@dataclasses.dataclass(frozen=True)
class CEMConfig:
    """Reference: thick.md, "THICK PlaNet" (TF2 `cem`: amount 1000, horizon 12, topk 100, iterations 10)."""

    candidates: int = 1000
    horizon: int = 12
    top: int = 100
    iterations: int = 10


class CEMResult(NamedTuple):
    plan: Float[Array, "H A"]  # continuous parts: the final mean; discrete parts: one-hot of the likeliest class
    mean: Float[Array, "H A"]  # continuous parts: the mean; discrete parts: class probabilities
    std: Float[Array, "H A"]  # continuous parts: the std; discrete parts: 0
    score: Float[Array, ""]  # mean objective of the last iteration's elites


def _part_slices(layout: ActionLayout):
    start = 0
    for part in layout.parts:
        yield part, slice(start, start + part.size)
        start += part.size


def cem(
    objective: Callable[[Float[Array, "H A"], PRNGKeyArray], Float[Array, ""]],
    layout: ActionLayout,
    config: CEMConfig = CEMConfig(),
    *,
    key: PRNGKeyArray,
) -> CEMResult:
    """Cross-entropy method over action sequences (H, layout.size); `objective` scores one sequence (higher is
    better) and is vmapped over the candidates (each gets its own key)."""
    if not 1 <= config.top <= config.candidates:
        raise ValueError(f"CEM needs 1 <= top <= candidates, got top {config.top}, candidates {config.candidates}")
    if config.horizon < 1 or config.iterations < 1:
        raise ValueError(f"CEM needs horizon and iterations >= 1, got {config.horizon}, {config.iterations}")
    shape = (config.horizon, layout.size)
    mean = jnp.zeros(shape, jnp.float32)
    std = jnp.zeros(shape, jnp.float32)
    for part, where in _part_slices(layout):
        if part.discrete:
            mean = mean.at[:, where].set(1.0 / part.size)
        else:
            std = std.at[:, where].set(1.0)

    def sample(key, mean, std):
        pieces = []
        for part, where in _part_slices(layout):
            key, sub = jax.random.split(key)
            if part.discrete:
                logits = jnp.log(jnp.maximum(mean[:, where], 1e-30))
                classes = jax.random.categorical(sub, logits, shape=(config.candidates, config.horizon))
                pieces.append(jax.nn.one_hot(classes, part.size, dtype=jnp.float32))
            else:
                noise = jax.random.normal(sub, (config.candidates, *mean[:, where].shape), jnp.float32)
                pieces.append(jnp.clip(mean[:, where] + std[:, where] * noise, -1.0, 1.0))
        return jnp.concatenate(pieces, -1)

    def iteration(carry, key):
        mean, std = carry
        sample_key, score_key = jax.random.split(key)
        actions = sample(sample_key, mean, std)  # (N, H, A)
        scores = jax.vmap(objective)(actions, jax.random.split(score_key, config.candidates))
        elite_scores, elite = jax.lax.top_k(scores, config.top)
        elites = actions[elite]
        new_mean = elites.mean(0)
        new_std = jnp.zeros_like(std)
        for part, where in _part_slices(layout):
            if not part.discrete:
                variance = elites[:, :, where].var(0)
                new_std = new_std.at[:, where].set(jnp.sqrt(variance + 1e-6))
        return (new_mean, new_std), elite_scores.mean()

    (mean, std), scores = jax.lax.scan(iteration, (mean, std), jax.random.split(key, config.iterations))
    plan = mean
    for part, where in _part_slices(layout):
        if part.discrete:
            plan = plan.at[:, where].set(jax.nn.one_hot(jnp.argmax(mean[:, where], -1), part.size))
    return CEMResult(plan=plan, mean=mean, std=std, score=scores[-1])


# ------------------------------------------------------------------------------------------ MinMaxStats


class MinMaxStats(NamedTuple):
    """The smallest and largest Q value seen in one search (MuZero); starts empty (+inf, -inf)."""

    minimum: Float[Array, ""]
    maximum: Float[Array, ""]

    @classmethod
    def empty(cls) -> MinMaxStats:
        return cls(jnp.asarray(jnp.inf, jnp.float32), jnp.asarray(-jnp.inf, jnp.float32))

    def update(self, value: Float[Array, ""]) -> MinMaxStats:
        # The upstream THICK code writes maximum(minimum, value) here (reference: thick.md); a minimum it is.
        return MinMaxStats(jnp.minimum(self.minimum, value), jnp.maximum(self.maximum, value))

    def normalize(self, value: Float[Array, "..."]) -> Float[Array, "..."]:
        """(value - min) / (max - min) once max > min, else the value unchanged."""
        spread = self.maximum - self.minimum
        return jnp.where(spread > 0, (value - self.minimum) / jnp.where(spread > 0, spread, 1.0), value)


# ------------------------------------------------------------------------------------------------ MCTS


@dataclasses.dataclass(frozen=True)
class MCTSConfig:
    """Reference: thick.md, "THICK PlaNet" (TF2 `mcts`: 100 simulations, Dirichlet 0.25, fraction 0.25)."""

    simulations: int = 100
    dirichlet_alpha: float = 0.25
    exploration_fraction: float = 0.25
    temperature: float = 1.0  # of the softmax over root visit counts (THICK: 1)
    exploration: float = 1.0  # c in the pUCT prior term (THICK: 1)


class Tree(NamedTuple):
    """A search tree of `simulations + 1` nodes (node 0 the root); unused nodes have parent -2."""

    parent: Int[Array, " N"]
    children: Int[Array, "N A"]  # node index of each child, -1 where not expanded
    prior: Float[Array, "N A"]  # prior over the node's children
    reward: Float[Array, " N"]  # reward of the transition into the node
    discount: Float[Array, " N"]  # discount of the transition into the node (applies to the node's value)
    visits: Float[Array, " N"]
    value_sum: Float[Array, " N"]
    states: PyTree  # model states, leading axis N

    def value(self) -> Float[Array, " N"]:
        return jnp.where(self.visits > 0, self.value_sum / jnp.maximum(self.visits, 1.0), 0.0)


class MCTSResult(NamedTuple):
    action: Int[Array, ""]  # the chosen high-level action
    policy: Float[Array, " A"]  # softmax(root visit counts / T)
    child_state: PyTree  # the model state of the chosen root child (THICK's goal)
    tree: Tree
    stats: MinMaxStats


StepFn = Callable[[Any, Float[Array, " A"], PRNGKeyArray], tuple[Any, Float[Array, ""], Float[Array, ""]]]


def mcts(
    root: PyTree,
    *,
    prior_fn: Callable[[Any], Float[Array, " A"]],
    step_fn: StepFn,
    value_fn: Callable[[Any], Float[Array, ""]],
    num_actions: int,
    config: MCTSConfig = MCTSConfig(),
    key: PRNGKeyArray,
) -> MCTSResult:
    """Search from one model state. `prior_fn(state) -> logits (A,)`; `step_fn(state, one_hot_action, key) ->
    (next_state, reward, discount)`; `value_fn(state) -> value` (states are pytrees of fixed shapes)."""
    if config.simulations < 1:
        raise ValueError(f"MCTS needs at least one simulation, got {config.simulations}")
    nodes = config.simulations + 1
    noise_key, search_key, choice_key = jax.random.split(key, 3)

    root_prior = jax.nn.softmax(prior_fn(root))
    noise = jax.random.dirichlet(noise_key, jnp.full((num_actions,), config.dirichlet_alpha, jnp.float32))
    fraction = config.exploration_fraction
    root_prior = (1.0 - fraction) * root_prior + fraction * noise

    tree = Tree(
        parent=jnp.full((nodes,), -2, jnp.int32).at[0].set(-1),
        children=jnp.full((nodes, num_actions), -1, jnp.int32),
        prior=jnp.zeros((nodes, num_actions), jnp.float32).at[0].set(root_prior),
        reward=jnp.zeros((nodes,), jnp.float32),
        discount=jnp.ones((nodes,), jnp.float32),
        # THICK backs the root up once with value 0 before searching: N(root) = 1.
        visits=jnp.zeros((nodes,), jnp.float32).at[0].set(1.0),
        value_sum=jnp.zeros((nodes,), jnp.float32),
        states=jax.tree.map(lambda x: jnp.zeros((nodes, *jnp.shape(x)), jnp.result_type(x)).at[0].set(x), root),
    )
    stats = MinMaxStats.empty()

    def scores(tree: Tree, stats: MinMaxStats, node):
        children = tree.children[node]
        safe = jnp.maximum(children, 0)
        visits = jnp.where(children >= 0, tree.visits[safe], 0.0)
        q = tree.reward[safe] + tree.discount[safe] * tree.value()[safe]
        value_score = jnp.where(visits > 0, stats.normalize(q), 0.0)
        prior_score = config.exploration * tree.prior[node] * jnp.sqrt(tree.visits[node]) / (visits + 1.0)
        return value_score + prior_score

    def select(tree: Tree, stats: MinMaxStats):
        """Descend from the root to the first edge that leads to no node: (node, action)."""

        def cond(carry):
            node, action = carry
            return tree.children[node, action] >= 0

        def body(carry):
            node, action = carry
            child = tree.children[node, action]
            return child, jnp.argmax(scores(tree, stats, child)).astype(jnp.int32)

        start = (jnp.zeros((), jnp.int32), jnp.argmax(scores(tree, stats, 0)).astype(jnp.int32))
        return jax.lax.while_loop(cond, body, start)

    def backup(tree: Tree, stats: MinMaxStats, leaf, value):
        def cond(carry):
            node, _, _, _ = carry
            return node >= 0

        def body(carry):
            node, value, tree, stats = carry
            visits = tree.visits.at[node].add(1.0)
            value_sum = tree.value_sum.at[node].add(value)
            q = tree.reward[node] + tree.discount[node] * value_sum[node] / visits[node]
            stats = jax.lax.cond(node > 0, lambda: stats.update(q), lambda: stats)  # Q of the edge into node
            value = tree.reward[node] + tree.discount[node] * value
            tree = tree._replace(visits=visits, value_sum=value_sum)
            return tree.parent[node], value, tree, stats

        _, _, tree, stats = jax.lax.while_loop(cond, body, (leaf, value, tree, stats))
        return tree, stats

    def simulate(carry, inputs):
        tree, stats = carry
        index, step_key = inputs
        node, action = select(tree, stats)
        state = jax.tree.map(lambda x: x[node], tree.states)
        new_state, reward, discount = step_fn(state, jax.nn.one_hot(action, num_actions), step_key)
        prior = jax.nn.softmax(prior_fn(new_state))
        value = value_fn(new_state)
        tree = tree._replace(
            parent=tree.parent.at[index].set(node),
            children=tree.children.at[node, action].set(index),
            prior=tree.prior.at[index].set(prior),
            reward=tree.reward.at[index].set(reward),
            discount=tree.discount.at[index].set(discount),
            states=jax.tree.map(lambda xs, x: xs.at[index].set(x), tree.states, new_state),
        )
        tree, stats = backup(tree, stats, index, jnp.asarray(value, jnp.float32))
        return (tree, stats), None

    indices = jnp.arange(1, nodes, dtype=jnp.int32)
    (tree, stats), _ = jax.lax.scan(
        simulate, (tree, stats), (indices, jax.random.split(search_key, config.simulations))
    )
    root_children = tree.children[0]
    counts = jnp.where(root_children >= 0, tree.visits[jnp.maximum(root_children, 0)], 0.0)
    policy = jax.nn.softmax(counts / config.temperature)
    action = jax.random.categorical(choice_key, jnp.log(policy)).astype(jnp.int32)
    # The chosen child exists whenever it was visited; a never-visited one (possible only with fewer
    # simulations than actions) yields the root's own state.
    chosen = jnp.maximum(root_children[action], 0)
    child_state = jax.tree.map(lambda x: x[chosen], tree.states)
    return MCTSResult(action=action, policy=policy, child_state=child_state, tree=tree, stats=stats)


def root_visits(tree: Tree) -> Float[Array, " A"]:
    """Visit counts of the root's children."""
    children = tree.children[0]
    return jnp.where(children >= 0, tree.visits[jnp.maximum(children, 0)], 0.0)
