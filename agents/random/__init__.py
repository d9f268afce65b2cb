"""The random agent: uniform actions, no learning. The reference point every learning test compares to."""

from agents.random.agent import SPEC as SPEC
from agents.random.agent import RandomAgent as RandomAgent
from agents.random.agent import RandomConfig as RandomConfig
