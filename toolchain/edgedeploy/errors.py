"""Host-side error tree; only the CLI turns these into exit codes and messages.

The root and the device-side errors live in :mod:`edgedeploy.runtime.errors` so device and host
share them.
"""

from __future__ import annotations

from edgedeploy.runtime.errors import (
    EdgeDeployError,
    ExecutionError,
    ExitCode,
    InputError,
    ModelError,
    StageError,
    UnsupportedModelError,
    did_you_mean,
)

__all__ = [
    "DeployError",
    "EdgeDeployError",
    "ExecutionError",
    "ExitCode",
    "InfeasibleError",
    "InputError",
    "ManifestError",
    "ModelError",
    "PlanError",
    "StageError",
    "StaleLockfileError",
    "TargetError",
    "UnsupportedModelError",
    "did_you_mean",
]


class ManifestError(InputError):
    """A manifest file is unreadable or invalid; the message starts with file:line:column."""


class TargetError(InputError):
    """A board descriptor is unknown or invalid."""


class PlanError(InputError):
    """A plan lockfile is invalid or stale."""


class StaleLockfileError(EdgeDeployError):
    """A committed lockfile no longer matches the manifest, model or target it was planned from
    (``plan --check``, ``push --locked``)."""

    exit_code = ExitCode.STALE


class InfeasibleError(EdgeDeployError):
    """No plan meets a constraint; the message names it and the best value reachable."""

    exit_code = ExitCode.INFEASIBLE


class UnreachableError(EdgeDeployError):
    """A host cannot be reached or refuses our credentials / host key."""

    exit_code = ExitCode.UNREACHABLE


class DeployError(EdgeDeployError):
    """A deploy failed and the previous release was restored."""

    exit_code = ExitCode.ROLLED_BACK


class RollbackFailedError(EdgeDeployError):
    """A deploy failed and restoring the previous release failed too."""

    exit_code = ExitCode.ROLLBACK_FAILED
