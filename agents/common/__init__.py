"""Shared Equinox building blocks of the world-model agents (re-exported; code lives in the modules)."""

from agents.common.dynamics import AbstractDynamics as AbstractDynamics
from agents.common.dynamics import Latent as Latent
from agents.common.dynamics import WorldModelData as WorldModelData
