"""The cost model: predicted time of every (layer, primitive, core configuration).

Prior (roofline per primitive from the board descriptor) x a correction learned from the board's
profile; transfer to a new board from a few samples; pipeline composition. See DESIGN.md.
"""

from __future__ import annotations

from edgedeploy.costmodel.configs import CoreConfig, core_configs
from edgedeploy.costmodel.fit import Correction
from edgedeploy.costmodel.model import CostModel, PredictionTable, candidates
from edgedeploy.costmodel.pipeline import predict_pipeline
from edgedeploy.costmodel.profile import (
    Profile,
    ProfileError,
    Sample,
    export_profile,
    import_profile,
    open_profile,
    profile_path,
    read_profile,
)

__all__ = [
    "CoreConfig", "Correction", "CostModel", "PredictionTable", "Profile", "ProfileError",
    "Sample", "candidates", "core_configs", "export_profile", "import_profile", "open_profile",
    "predict_pipeline", "profile_path", "read_profile",
]
