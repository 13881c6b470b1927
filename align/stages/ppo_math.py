"""Moved to ``align.stages.ppo.losses`` (PPO's maths); importable under this name as the same module."""

import sys

from align.stages.ppo import losses

sys.modules[__name__] = losses
