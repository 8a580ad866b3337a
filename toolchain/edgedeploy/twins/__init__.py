"""Board twins: simulated boards (``sim:<board>``) with a hidden, seeded ground truth.

Never imported by ``costmodel`` or ``planner`` (the twin's truth must stay hidden from them).
"""

from __future__ import annotations

from edgedeploy.twins.device import SIM_PREFIX, TwinDevice, is_sim, twin_target
from edgedeploy.twins.groundtruth import GroundTruth, layer_options

__all__ = ["SIM_PREFIX", "GroundTruth", "TwinDevice", "is_sim", "layer_options", "twin_target"]
