"""Fixed shell scripts run on the board with user data only as positional arguments.

Why fixed text: hostile paths and names then never reach a shell parser; they arrive as ``$1``,
``$2``... after ``shlex.join`` quoting of the argv. Every script takes the install root as ``$1``.
The alive test reads /proc state because a board's init may not reap (a zombie passes kill -0).
"""

from __future__ import annotations

_ALIVE = """alive() {
  [ -r "/proc/$1/stat" ] || return 1
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
"""

#: $1 root. Prints key=value facts about the board and the install (read-only).
PROBE = _ALIVE + """
printf 'home=%s\\n' "$HOME"
command -v sha256sum >/dev/null 2>&1 && echo sha256sum=1
command -v setsid >/dev/null 2>&1 && echo setsid=1
command -v timeout >/dev/null 2>&1 && echo timeout=1
systemctl --user show-environment >/dev/null 2>&1 && echo systemd_user=1
if [ -L "$1/current" ]; then printf 'current=%s\\n' "$(readlink "$1/current")"; fi
if [ -e "$1" ] && [ ! -d "$1" ]; then echo root_not_dir=1; fi
pid=$(cat "$1/run/runner.pid" 2>/dev/null)
case "$pid" in ''|*[!0-9]*) ;; *) printf 'pid=%s\\n' "$pid"; alive "$pid" && echo alive=1;; esac
[ -f "$1/run/runner.release" ] && printf 'running=%s\\n' "$(cat "$1/run/runner.release")"
[ -f "$1/run/runner.pid" ] && printf 'started=%s\\n' "$(date -r "$1/run/runner.pid" +%s)"
[ -f "$1/run/health.status" ] && printf 'health=%s\\n' "$(cat "$1/run/health.status")"
[ -f "$1/run/health.out" ] && \\
  printf 'health_out=%s\\n' "$(head -c 2000 "$1/run/health.out" | tr '\\n' ' ')"
printf 'now=%s\\n' "$(date +%s)"
exit 0
"""

#: $1 root, $2 release id, $3 entry script. Started under ``setsid -f``: a new session whose
#: leader's pid (this shell, then run.sh after exec) goes to the pidfile.
START = """exec >>"$1/logs/runner.log" 2>&1 </dev/null
cd "$1/releases/$2" || exit 97
echo $$ > "$1/run/runner.pid.tmp" && mv -f "$1/run/runner.pid.tmp" "$1/run/runner.pid"
printf '%s' "$2" > "$1/run/runner.release"
echo "== edgedeploy: release $2 starting at $(date -u +%Y-%m-%dT%H:%M:%SZ) pid $$"
exec sh "./$3"
"""

#: $1 root. Stops the supervised runner's whole process group: TERM, then KILL after 5 s.
STOP = _ALIVE + """
pidf="$1/run/runner.pid"
[ -f "$pidf" ] || exit 0
pid=$(cat "$pidf")
case "$pid" in ''|*[!0-9]*) rm -f "$pidf"; exit 0;; esac
if alive "$pid"; then
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  i=0
  while alive "$pid" && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  alive "$pid" && kill -KILL -- "-$pid" 2>/dev/null
  echo "== edgedeploy: stopped pid $pid at $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$1/logs/runner.log"
fi
rm -f "$pidf" "$1/run/runner.release"
exit 0
"""

#: $1 root, $2 release id, $3 health script, $4 timeout s. Exit 90 when the runner is gone.
HEALTH = _ALIVE + """
pid=$(cat "$1/run/runner.pid" 2>/dev/null)
if [ -n "$pid" ] && ! alive "$pid"; then
  echo "runner (pid $pid) is not running"; exit 90
fi
cd "$1/releases/$2" || exit 97
out=$(timeout "$4" sh "./$3" 2>&1); rc=$?
printf '%s %s %s\\n' "$rc" "$(date +%s)" "$2" > "$1/run/health.status"
printf '%s\\n' "$out" > "$1/run/health.out"
printf '%s\\n' "$out"
exit "$rc"
"""

#: $1 tmp release dir. Verifies SHA256SUMS with sha256sum, or Python where it is missing.
VERIFY = """cd "$1" || exit 97
if command -v sha256sum >/dev/null 2>&1; then exec sha256sum -c --quiet --strict SHA256SUMS; fi
exec python3 -c '
import hashlib, sys
bad = 0
for line in open("SHA256SUMS"):
    digest, name = line.rstrip("\\n").split("  ", 1)
    h = hashlib.sha256(open(name, "rb").read()).hexdigest()
    if h != digest:
        print(name + ": FAILED"); bad = 1
sys.exit(bad)'
"""

#: $1 root, $2 release id, $3 link name. Atomic switch: a new symlink renamed over ``current``.
SWITCH = """cd "$1" || exit 97
ln -s "releases/$2" "$3" && mv -T "$3" current
"""

#: $1 root, $2 lines. Newest runner log lines.
LOGS = """[ -f "$1/logs/runner.log" ] || exit 0
tail -n "$2" "$1/logs/runner.log"
"""

#: $1 root. Releases, newest first, as "<mtime> <id>".
LIST = """[ -d "$1/releases" ] || exit 0
cd "$1/releases" || exit 97
for d in *; do [ -d "$d" ] && printf '%s %s\\n' "$(date -r "$d" +%s)" "$d"; done | sort -rn
exit 0
"""

#: $1 tmp file, $2 journal. Append the uploaded lines to the board's journal.
APPEND = """cat "$1" >> "$2" && rm -f "$1"
"""

#: python3 -c: facts for doctor as one JSON line (distribution versions without importing them).
#: Arguments are requirements: distribution names and ``provider:<Name>``; ``--providers`` asks
#: for the provider list. onnxruntime is imported only then (it takes seconds on a small board),
#: and in a child interpreter, so an onnxruntime that hangs or crashes on import is reported as
#: "providers": null with its error instead of taking the whole doctor down with it.
DOCTOR_PY = """
import json, platform, shutil, subprocess, sys
from importlib import metadata
def v(*names):
    for n in names:
        try:
            return metadata.version(n)
        except Exception:
            pass
    return None
def providers():
    code = "import json, onnxruntime; print(json.dumps(onnxruntime.get_available_providers()))"
    try:
        p = subprocess.run([sys.executable or "python3", "-c", code], capture_output=True,
                           text=True, timeout=45, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, "importing onnxruntime timed out after 45 s"
    except Exception as e:
        return None, "importing onnxruntime failed: %s" % e
    if p.returncode == 0:
        try:
            return [str(x) for x in json.loads(p.stdout.strip().splitlines()[-1])], None
        except Exception:
            pass
    lines = p.stderr.strip().splitlines() or ["exit %d" % p.returncode]
    return None, "importing onnxruntime failed: " + lines[-1][-500:]
args = sys.argv[1:]
dists = [a for a in args if a != "--providers" and not a.startswith("provider:")]
found, error = None, None
if len(dists) < len(args):
    found, error = providers()
print(json.dumps({
  "arch": platform.machine(), "python": platform.python_version(),
  "numpy": v("numpy"), "onnxruntime": v("onnxruntime", "onnxruntime-gpu"),
  "litert": v("ai-edge-litert", "tflite-runtime"),
  "requires": {n: v(n) for n in dists},
  "providers": found, "providers_error": error,
  "tools": {t: bool(shutil.which(t)) for t in ("setsid", "timeout", "sha256sum", "systemctl")},
}))
"""
