"""A per-host deploy journal: what each step did, how long it took and how it ended.

Written as JSON lines twice: on this machine (at once, so it survives a dropped link) and on the
board under ``<path>/journal.jsonl`` (appended at the end of each operation), so whoever looks at
a board later can read its history without the laptop that deployed it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgedeploy.deploy import scripts
from edgedeploy.deploy.transport import Transport

log = logging.getLogger("edgedeploy.deploy")
_LOCAL_LOCK = threading.Lock()


def default_journal_dir() -> Path:
    from platformdirs import user_state_dir

    return Path(user_state_dir("edgedeploy")) / "journal"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class Journal:
    """Records the steps of one operation (push, rollback, stop) on one host."""

    def __init__(self, host: str, root: str, op: str, *, local_dir: Path | None = None,
                 dry_run: bool = False) -> None:
        self.host, self.root, self.op, self.dry_run = host, root, op, dry_run
        self.op_id = uuid.uuid4().hex[:12]
        self.entries: list[dict[str, Any]] = []
        self.local_path = local_journal_path(host, local_dir)

    def record(self, step: str, outcome: str, duration_s: float = 0.0,
               **detail: Any) -> dict[str, Any]:
        entry = {"ts": _now(), "host": self.host, "path": self.root, "op": self.op,
                 "op_id": self.op_id, "step": step,
                 "outcome": "dry-run" if self.dry_run and outcome == "ok" else outcome,
                 "duration_s": round(duration_s, 4), "detail": detail}
        self.entries.append(entry)
        log.info("[%s] %s: %s (%.2f s)", self.host, step, entry["outcome"], duration_s)
        if not self.dry_run:
            self._append_local(entry)
        return entry

    @contextlib.contextmanager
    def step(self, name: str, **detail: Any) -> Iterator[dict[str, Any]]:
        """Time a step; the yielded dict collects detail; an exception marks it failed."""
        start = time.monotonic()
        try:
            yield detail
        except BaseException as exc:
            self.record(name, "failed", time.monotonic() - start, error=str(exc), **detail)
            raise
        self.record(name, "ok", time.monotonic() - start, **detail)

    def refused(self, transport: Transport, step: str, why: str, **detail: Any) -> dict[str, Any]:
        """Record a request refused before anything changed, here and on the board: whoever
        reads the board's history later sees what was asked of it and why it was not done."""
        entry = self.record(step, "refused", error=why, **detail)
        self.flush_remote(transport)
        return entry

    def _append_local(self, entry: dict[str, Any]) -> None:
        try:
            with _LOCAL_LOCK:
                self.local_path.parent.mkdir(parents=True, exist_ok=True)
                with self.local_path.open("a") as fh:
                    fh.write(json.dumps(entry, default=str) + "\n")
        except OSError as exc:  # the journal must never break a deploy
            log.warning("cannot write the local journal %s: %s", self.local_path, exc)

    def flush_remote(self, transport: Transport) -> bool:
        """Append this operation's entries to ``<root>/journal.jsonl`` on the board."""
        if self.dry_run or not self.entries:
            return False
        text = "".join(json.dumps(e, default=str) + "\n" for e in self.entries)
        remote_tmp = f"{self.root}/.journal-{self.op_id}.tmp"
        try:
            with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as fh:
                fh.write(text)
            transport.put(Path(fh.name), remote_tmp)
            transport.run(["sh", "-c", scripts.APPEND, "edgedeploy-journal", remote_tmp,
                           f"{self.root}/journal.jsonl"], what="appending the journal")
            return True
        except Exception as exc:  # a lost link: the local copy still has it all
            log.warning("[%s] board journal not written (%s); the local copy %s has it",
                        self.host, exc, self.local_path)
            return False
        finally:
            with contextlib.suppress(OSError, UnboundLocalError):
                Path(fh.name).unlink()


def read_journal(path: Path) -> list[dict[str, Any]]:
    """Entries of a journal file (local copy or one fetched from a board)."""
    if not path.is_file():
        return []
    return parse_journal(path.read_text())


def parse_journal(text: str) -> list[dict[str, Any]]:
    """JSON-lines entries; a torn or foreign line (a write cut by a lost link) is skipped."""
    entries = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


def local_journal_path(host: str, local_dir: Path | None = None) -> Path:
    """This machine's copy of ``host``'s journal."""
    safe = re.sub(r"[^A-Za-z0-9_.@-]+", "_", host)[:100] or "host"
    return (local_dir or default_journal_dir()) / f"{safe}.jsonl"
