"""A release's first start optimises each segment for this board's CPU in a short-lived process.

onnxruntime's optimizer holds a segment's weights as read beside the copies it rewrites (the
NCHWc layout reorders every conv kernel), so a session that optimises while it opens peaks at
about twice its weights, and the stage process keeps that high-water mark (and much of the freed
heap) for its life. Here a child process opens the segment once, saves the optimised graph into
the board's cache (``ort_files``) and exits, taking its peak with it; the stage then opens the
cached form as every later start does, with the weights mapped from the file. A lock on the
release's ``engine-cache/`` lets one segment be optimised at a time, so stages and replicas that
start together peak at one segment's optimisation, not the sum of all of them.

Run as ``python -m edgedeploy.runtime.engines.ort_compile SOURCE CACHE``: exit 0 when the cache
entry is in place; its last line on stdout is ``{"peak_rss": bytes}``, the child's own peak.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgedeploy.runtime.engines.ort_files import (
    CPU_PROVIDER,
    EXTERNAL_MIN_BYTES,
    SAVE_DATA_KEY,
    SAVE_MIN_KEY,
    cache_ready,
    discard,
    publish,
    staging_dir,
)
from edgedeploy.runtime.process_memory import rss_bytes
from edgedeploy.runtime.vocab import ORT_ERRORS_ONLY

LOCK_NAME = ".optimize.lock"
#: A stage waits at most this long for the child (a large model on a slow board takes minutes).
TIMEOUT_S = 900.0
#: What the package's import root is: the child imports edgedeploy.runtime from the same place.
PACKAGE_ROOT = Path(__file__).resolve().parents[3]


@contextlib.contextmanager
def _one_at_a_time(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder``'s lock file (no lock where the platform has none)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(folder / LOCK_NAME, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class ChildOptimized:
    """What :func:`optimize_in_child` did: ``failure`` says why the cache entry is not ready
    ("" when it is); ``peak_rss`` is the child's peak (0 when no child ran)."""

    failure: str = ""
    peak_rss: int = 0


def optimize_in_child(source: Path, cache: Path) -> ChildOptimized:
    """Have a child process write ``cache`` (the CPU provider's fully optimised form of
    ``source``). The entry may also be ready because another stage wrote it meanwhile; when it
    is not, the caller optimises in its own process as before."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with _one_at_a_time(cache.parent.parent):
            if cache_ready(cache):
                return ChildOptimized()
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
            proc = subprocess.run(
                [sys.executable, "-m", "edgedeploy.runtime.engines.ort_compile", str(source),
                 str(cache)], env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
                check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return ChildOptimized(f"could not optimise {source.name} in a child process: {exc}")
    peak = _reported_peak(proc.stdout)
    if proc.returncode == 0 and cache_ready(cache):
        return ChildOptimized("", peak)
    tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
    return ChildOptimized(f"optimising {source.name} in a child process failed: {tail[0]}", peak)


def _reported_peak(stdout: str | None) -> int:
    with contextlib.suppress(ValueError, TypeError, AttributeError, IndexError):
        return int(json.loads((stdout or "").strip().splitlines()[-1])["peak_rss"])
    return 0


def main(argv: list[str]) -> int:
    import onnxruntime as ort

    source, cache = Path(argv[0]), Path(argv[1])
    staged = staging_dir(cache) / cache.name
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = ORT_ERRORS_ONLY  # its warning: the graph fits this CPU, as meant
    opts.optimized_model_filepath = str(staged)
    opts.add_session_config_entry(SAVE_DATA_KEY, f"{cache.name}.data")
    opts.add_session_config_entry(SAVE_MIN_KEY, str(EXTERNAL_MIN_BYTES))
    try:
        ort.InferenceSession(str(source), opts, providers=[CPU_PROVIDER])
    except Exception as exc:  # onnxruntime's own error types
        discard(staged)
        print(f"onnxruntime cannot open {source}: {exc}", file=sys.stderr)
        return 1
    published = publish(staged, cache)
    print(json.dumps({"peak_rss": rss_bytes("VmHWM")}), flush=True)
    return 0 if published else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
