"""IRIS (Micheli et al., ICLR 2023): discrete tokenizer, GPT world model with KV-cache imagination, CNN+LSTM
actor-critic."""

from agents.iris.agent import IRIS as IRIS
from agents.iris.agent import ActorCritic as ActorCritic
from agents.iris.agent import IRISState as IRISState
from agents.iris.agent import make_agent as make_agent
from agents.iris.config import IRISConfig as IRISConfig
from agents.iris.tokenizer import Tokenizer as Tokenizer
from agents.iris.transformer import WorldModelGPT as WorldModelGPT
from bench.api import AgentSpec

SPEC = AgentSpec(
    name="iris",
    config_cls=IRISConfig,
    make=make_agent,
    presets=("agents.iris:presets.yaml",),
    action_kinds=("discrete",),  # IRIS embeds one discrete action as a token
    batch_shards=True,
    description="IRIS (Micheli et al. 2023): VQ tokenizer, GPT world model imagining token by token with a "
    "KV cache, CNN+LSTM actor-critic; three training streams. Presets atari100k, debug, quick.",
)
