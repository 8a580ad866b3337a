"""The root of edgedeploy's error tree.

It lives in the runtime package because the runtime is copied onto devices and must raise the same
errors the host maps to exit codes; it is plain Python with no dependencies.
"""

from __future__ import annotations


def did_you_mean(word: str, choices: object, cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to ``word``, else ``""``: the one
    suggestion helper every unknown-name error uses."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


class ExitCode:
    """Documented process exit codes (README, "Exit codes")."""

    OK = 0
    FAILURE = 1  # internal or operational failure
    BAD_INPUT = 2  # manifest, model, target or argument problems the user can fix
    INFEASIBLE = 3  # no plan meets the manifest's constraints
    UNREACHABLE = 4  # host unreachable or authentication failed
    ROLLED_BACK = 5  # deploy failed, the previous release was restored
    ROLLBACK_FAILED = 6  # deploy failed and restoring the previous release failed too
    STALE = 7  # a committed lockfile no longer matches its inputs (plan --check, push --locked)


class EdgeDeployError(Exception):
    """Base of every error edgedeploy raises on purpose; carries a hint and an exit code."""

    exit_code: int = ExitCode.FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class InputError(EdgeDeployError):
    """Something the user gave us is wrong; they can fix it."""

    exit_code = ExitCode.BAD_INPUT


class ModelError(InputError):
    """A model file cannot be read or imported."""


class UnsupportedModelError(ModelError):
    """A model is valid but uses something edgedeploy cannot handle (e.g. int8 quantisation)."""


class ExecutionError(EdgeDeployError):
    """Running a graph, a primitive or a pipeline stage failed."""


class StageError(ExecutionError):
    """A pipeline stage raised or died; names the stage."""

    def __init__(self, stage: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"stage {stage}: {message}", hint)
        self.stage = stage
