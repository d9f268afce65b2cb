"""BringBackShapes: our own seedable reimplementation of the VSG paper's 2-D object-pushing task."""

from tasks.bbs.env import BBSProtocol as BBSProtocol
from tasks.bbs.env import BringBackShapes as BringBackShapes
from tasks.bbs.env import priv_state_layout as priv_state_layout
from tasks.bbs.suite import SUITE as SUITE
from tasks.bbs.suite import TASKS as TASKS
from tasks.bbs.suite import make_env as make_env
