"""Shared Equinox building blocks of the world-model agents (re-exported; code lives in the modules).

nets (dense layers, block GRU), conv (CNN encoder/decoder), distributions (symlog, unimix categoricals, twohot, Bernoulli,
bounded normal), returns (lambda returns, percentile normaliser, EMA), optim (LaProp + AGC), behaviour
(imagination actor-critic), observations (encoders/decoders over observation dicts), actions (action dicts
<-> vectors), latents (helpers of the categorical-latent dynamics, whose contract is
agents/dreamerv3/dynamics.py), shards (an update split into equal parts of its batch with the same math).
"""

from agents.common import distributions as distributions
from agents.common.actions import ActionLayout as ActionLayout
from agents.common.behaviour import Actor as Actor
from agents.common.behaviour import imagination_loss as imagination_loss
from agents.common.behaviour import imagine as imagine
from agents.common.behaviour import make_critic as make_critic
from agents.common.behaviour import replay_value_loss as replay_value_loss
from agents.common.latents import Latent as Latent
from agents.common.nets import MLP as MLP
from agents.common.nets import BlockGRU as BlockGRU
from agents.common.nets import BlockLinear as BlockLinear
from agents.common.conv import Conv2d as Conv2d
from agents.common.conv import ConvDecoder as ConvDecoder
from agents.common.conv import ConvEncoder as ConvEncoder
from agents.common.conv import conv2d as conv2d
from agents.common.nets import Linear as Linear
from agents.common.nets import MLPHead as MLPHead
from agents.common.nets import NormedLinear as NormedLinear
from agents.common.nets import RMSNorm as RMSNorm
from agents.common.nets import batched as batched
from agents.common.observations import ObservationDecoder as ObservationDecoder
from agents.common.observations import ObservationEncoder as ObservationEncoder
from agents.common.optim import laprop_agc as laprop_agc
from agents.common.returns import PercentileNormalizer as PercentileNormalizer
from agents.common.returns import ema_update as ema_update
from agents.common.returns import lambda_return as lambda_return
