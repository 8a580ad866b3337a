"""Fleets: one target alias, several hosts, pushed in parallel batches.

Why a thread pool of per-host deploys and not Fabric's ThreadingGroup: a ThreadingGroup runs one
command on every host in lockstep, but a deploy is a conversation with per-host branches (this
host rolls back while that one is still uploading), and ``--max-fail`` must stop scheduling the
next batch. Each host gets its own Connection and the whole :func:`push_release` state machine.
``serial`` and ``max_fail_percent`` follow Ansible: hosts go in batches of ``serial``; when more
than ``max_fail_percent`` of a batch fails, later batches are skipped; a failed host is rolled
back by its own deploy, never left half-switched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from edgedeploy.deploy.release import HostResult
from edgedeploy.errors import EdgeDeployError, ExitCode

MAX_PARALLEL = 16


class FleetError(EdgeDeployError):
    """Some hosts of a fleet failed; the exit code is the worst host's."""

    def __init__(self, message: str, exit_code: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code


#: Which failure wins the fleet's exit code (a broken host outranks a rolled-back one).
_SEVERITY = {ExitCode.ROLLBACK_FAILED: 4, ExitCode.ROLLED_BACK: 3, ExitCode.UNREACHABLE: 2,
             ExitCode.BAD_INPUT: 1, ExitCode.FAILURE: 1}

T = TypeVar("T")


def worst_exit_code(codes: Iterable[int]) -> int:
    """The code a fleet exits with: its most severe host's (0 when no host failed), so one
    broken or unreachable board is never hidden behind the others' success."""
    bad = [c for c in codes if c]
    return max(bad, key=lambda c: _SEVERITY.get(c, 0)) if bad else ExitCode.OK


@dataclass
class DeployResult:
    """The outcome of one verb on a target: one HostResult per host, in the target's order."""

    target: str
    op: str
    hosts: list[HostResult] = field(default_factory=list)
    aborted: bool = False  # later batches skipped because max_fail was exceeded

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts)

    @property
    def exit_code(self) -> int:
        return worst_exit_code(h.exit_code for h in self.hosts)

    def table(self) -> tuple[list[str], list[list[Any]]]:
        cols = ["host", "outcome", "release", "previous", "current", "message"]
        return cols, [[h.host, h.outcome, h.release or "-", h.previous or "-",
                       h.current or "-", h.message.splitlines()[0] if h.message else ""]
                      for h in self.hosts]

    def raise_for_status(self) -> None:
        """Raise the mapped error: the host's own for one host, a FleetError for several."""
        if self.ok:
            return
        if len(self.hosts) == 1 and self.hosts[0].error is not None:
            error = self.hosts[0].error
            error.result = self  # type: ignore[attr-defined]
            raise error
        bad = [h for h in self.hosts if not h.ok]
        switched = any(h.outcome in ("rolled-back", "rollback-failed") for h in bad)
        err = FleetError(f"{self.op} on {self.target}: {len(bad)} of {len(self.hosts)} hosts "
                         "failed: " + "; ".join(f"{h.host}: {h.outcome}" for h in bad),
                         self.exit_code, hint="each failed host was rolled back unless its "
                                              "outcome says rollback-failed" if switched
                         else "; ".join(h.message.splitlines()[0] for h in bad))
        err.result = self  # type: ignore[attr-defined]
        raise err

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "op": self.op, "ok": self.ok,
                "exit_code": self.exit_code, "aborted": self.aborted,
                "hosts": [h.to_dict() for h in self.hosts]}


class HostAnswers(list[T], Generic[T]):
    """Per-host answers of a read-only verb (status, logs, releases, doctor), in the target's
    order, and the hosts that could not answer with their errors.

    A list, so callers index and serialise it as before; the command renders every answer first
    and then calls :meth:`raise_for_status`, so a fleet query exits with its worst host's code
    (4 for a host unreachable or refusing its key) in text and ``--json`` alike.
    """

    def __init__(self, target: str, op: str, answers: Iterable[T],
                 failures: Iterable[tuple[str, EdgeDeployError]] = ()) -> None:
        super().__init__(answers)
        self.target, self.op = target, op
        self.failures = list(failures)

    @property
    def exit_code(self) -> int:
        return worst_exit_code(exc.exit_code for _, exc in self.failures)

    def raise_for_status(self) -> None:
        """A FleetError naming every host that could not answer (its worst code), if any."""
        if not self.failures:
            return
        raise FleetError(f"{self.op} on {self.target}: {len(self.failures)} of {len(self)} hosts "
                         "could not answer: " + "; ".join(
                             f"{host}: {exc.message.splitlines()[0]}"
                             for host, exc in self.failures), self.exit_code)


def batches(hosts: list[str], serial: int | None) -> list[list[str]]:
    size = len(hosts) if not serial or serial <= 0 else serial
    return [hosts[i:i + size] for i in range(0, len(hosts), size)]


def run_fleet(target: str, op: str, hosts: list[str], one: Callable[[str], HostResult], *,
              serial: int | None = None, max_fail_percent: float = 100.0) -> DeployResult:
    """Run ``one(host)`` for every host, batch by batch, in parallel within a batch."""
    result = DeployResult(target, op)
    done: dict[str, HostResult] = {}
    for batch in batches(hosts, serial):
        if result.aborted:
            for host in batch:
                done[host] = HostResult(host, op, "", outcome="skipped",
                                        message="not attempted: max-fail exceeded earlier")
            continue
        with ThreadPoolExecutor(max_workers=min(len(batch), MAX_PARALLEL)) as pool:
            for host, res in zip(batch, pool.map(one, batch), strict=True):
                done[host] = res
        failed = sum(1 for h in batch if not done[h].ok)
        if failed and failed * 100.0 > max_fail_percent * len(batch) + 1e-9:
            result.aborted = True
    result.hosts = [done[h] for h in hosts]
    return result


def percent(value: str | float) -> float:
    """Parse ``--max-fail`` as Ansible writes it: 25 or '25%'."""
    number = float(str(value).rstrip("%"))
    if not 0 <= number <= 100 or math.isnan(number):
        raise ValueError(f"max-fail must be 0-100 %, got {value}")
    return number
