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
printf 'user=%s\\n' "$(id -un 2>/dev/null)"
if systemctl --user show-environment >/dev/null 2>&1; then
  echo systemd_user=1
  printf 'linger=%s\\n' "$(loginctl show-user "$(id -un)" --property=Linger --value 2>/dev/null)"
fi
if [ -L "$1/current" ]; then printf 'current=%s\\n' "$(readlink "$1/current")"; fi
if [ -e "$1" ] && [ ! -d "$1" ]; then echo root_not_dir=1; fi
pid=$(cat "$1/run/runner.pid" 2>/dev/null)
case "$pid" in ''|*[!0-9]*) ;; *) printf 'pid=%s\\n' "$pid"; alive "$pid" && echo alive=1;; esac
sup=$(cat "$1/run/supervisor.pid" 2>/dev/null)
case "$sup" in
  ''|*[!0-9]*) ;;
  *) printf 'supervisor=%s\\n' "$sup"; alive "$sup" && echo supervised=1;;
esac
[ -f "$1/run/restarts" ] && printf 'restarts=%s\\n' "$(cat "$1/run/restarts")"
[ -f "$1/run/python" ] && printf 'python=%s\\n' "$(head -n 1 "$1/run/python")"
[ -f "$1/run/runner.release" ] && printf 'running=%s\\n' "$(cat "$1/run/runner.release")"
[ -f "$1/run/runner.pid" ] && printf 'started=%s\\n' "$(date -r "$1/run/runner.pid" +%s)"
[ -f "$1/run/health.status" ] && printf 'health=%s\\n' "$(cat "$1/run/health.status")"
[ -f "$1/run/health.out" ] && \\
  printf 'health_out=%s\\n' "$(head -c 2000 "$1/run/health.out" | tr '\\n' ' ')"
printf 'now=%s\\n' "$(date +%s)"
exit 0
"""

#: $1 root, $2 release id, $3 entry script, $4 mode. Both modes count restarts in run/restarts
#: (status shows it) and keep run/runner.pid on the live runner (status and health check it).
#:
#: ``supervise`` (no systemd): started under ``setsid -f``, so this shell leads a session that
#: outlives the SSH connection; its pid goes to run/supervisor.pid (``stop`` signals its process
#: group). It runs the entry script as a child and restarts it when it fails - any exit but 0 (a
#: clean stop) and 2 (a bad bundle, which a restart cannot fix) - after 1, 2, 4 ... 30 s, the delay
#: reset once a runner stayed up a minute, as systemd's Restart=on-failure would. TERM/INT stop it:
#: the runner is signalled and waited for, and nothing is restarted.
#:
#: ``once`` (the ExecStart of a systemd --user unit with Restart=on-failure): systemd restarts it,
#: so each run after the first (the deployer removes run/restarts before starting) is a restart.
#: A release id of ``@current`` runs the release ``current`` points at (the installed unit's
#: ExecStart, so a reboot starts the release deployed last).
START = """exec >>"$1/logs/runner.log" 2>&1 </dev/null
if [ "$2" = @current ]; then
  r=$(readlink "$1/current") || exit 97
  set -- "$1" "${r##*/}" "$3" "$4"
fi
cd "$1/releases/$2" || exit 97
run="$1/run"
put() { printf '%s\\n' "$2" > "$run/$1.tmp" && mv -f "$run/$1.tmp" "$run/$1"; }
stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }
printf '%s' "$2" > "$run/runner.release"
if [ "$4" != supervise ]; then
  n=$(cat "$run/restarts" 2>/dev/null)
  case "$n" in ''|*[!0-9]*) put restarts 0;; *) put restarts $((n+1));; esac
  put runner.pid $$
  echo "== edgedeploy: release $2 starting at $(stamp) pid $$"
  exec sh "./$3"
fi
put supervisor.pid $$
put restarts 0
stopping=0 child= restarts=0 delay=1
trap 'stopping=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM INT
while :; do
  since=$(date +%s)
  sh "./$3" & child=$!
  put runner.pid "$child"
  echo "== edgedeploy: release $2 starting at $(stamp) pid $child"
  wait "$child"; rc=$?
  while [ "$stopping" = 1 ] && kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done
  [ "$stopping" = 1 ] && exit 0
  if [ "$rc" = 0 ] || [ "$rc" = 2 ]; then
    echo "== edgedeploy: runner pid $child exited $rc at $(stamp): not restarted"; exit "$rc"
  fi
  [ $(( $(date +%s) - since )) -ge 60 ] && delay=1
  echo "== edgedeploy: runner pid $child exited $rc at $(stamp); restarting in $delay s"
  sleep "$delay" & child=$!
  wait "$child"
  [ "$stopping" = 1 ] && { wait "$child"; exit 0; }
  restarts=$((restarts+1)); put restarts "$restarts"
  delay=$((delay*2)); [ "$delay" -gt 30 ] && delay=30
done
"""

#: $1 root, $2 START script, $3 unit file, $4 unit text, $5 unit name. Installs and (re)starts the
#: enabled systemd user unit (see :mod:`edgedeploy.deploy.unit`); files are replaced by rename.
INSTALL_UNIT = """set -e
mkdir -p "$1/run" "${3%/*}"
printf '%s' "$2" > "$1/run/start.sh.tmp" && mv -f "$1/run/start.sh.tmp" "$1/run/start.sh"
printf '%s' "$4" > "$3.tmp" && mv -f "$3.tmp" "$3"
systemctl --user daemon-reload
systemctl --user enable --quiet "$5.service"
systemctl --user restart "$5.service"
"""

#: $1 unit file, $2 unit name. Stops, disables and removes an installed unit (none: no-op), so
#: a stopped runner does not come back at boot.
REMOVE_UNIT = """[ -f "$1" ] || exit 0
systemctl --user disable --now --quiet "$2.service" || true
rm -f "$1"
systemctl --user daemon-reload || true
"""

#: $1 root. Stops the supervisor's whole process group first (so nothing restarts the runner),
#: then a runner still alive (one started under systemd leads its own group): TERM, then KILL
#: after 5 s each.
STOP = _ALIVE + """
run="$1/run"
for f in supervisor.pid runner.pid; do
  pid=$(cat "$run/$f" 2>/dev/null)
  case "$pid" in ''|*[!0-9]*) continue;; esac
  alive "$pid" || continue
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  i=0
  while alive "$pid" && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  alive "$pid" && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null; }
  echo "== edgedeploy: stopped pid $pid at $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$1/logs/runner.log"
done
rm -f "$run/supervisor.pid" "$run/runner.pid" "$run/runner.release"
exit 0
"""

#: $1 root, $2 release id, $3 health script, $4 timeout s. Exit 90 when the runner is gone, or
#: has been restarted since it was started (a release that crashes is not healthy, even if its
#: supervisor brought it back between two checks).
HEALTH = _ALIVE + """
pid=$(cat "$1/run/runner.pid" 2>/dev/null)
if [ -n "$pid" ] && ! alive "$pid"; then
  echo "runner (pid $pid) is not running"; exit 90
fi
n=$(cat "$1/run/restarts" 2>/dev/null)
case "$n" in
  ''|0|*[!0-9]*) ;;
  *) echo "runner restarted $n times since it was started"; exit 90;;
esac
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

#: $1 root, $2 minutes. Removes upload folders (releases/.incoming-*) in which nothing changed for
#: $2 minutes - a dropped connection's leftovers - and prints their names. An upload in progress
#: writes into its folder all the time (a file's mtime moves as it grows), so it is never taken.
PRUNE_INCOMING = """cd "$1/releases" 2>/dev/null || exit 0
for d in .incoming-*; do
  [ -d "$d" ] || continue
  [ -n "$(find "$d" -mmin "-$2" 2>/dev/null | head -n 1)" ] && continue
  rm -rf -- "$d" && printf '%s\\n' "$d"
done
exit 0
"""

#: $1 root, $2 interpreter. The board's Python for this install, chosen by the deployer
#: (run.sh and health.sh read it: the bundle itself never names an interpreter path).
SET_PYTHON = """printf '%s\\n' "$2" > "$1/run/python.tmp" &&
  mv -f "$1/run/python.tmp" "$1/run/python"
"""

#: $1 tmp file, $2 journal. Append the uploaded lines to the board's journal.
APPEND = """cat "$1" >> "$2" && rm -f "$1"
"""

#: python3 -c: facts for doctor as one JSON line (distribution versions without importing them).
#: Arguments are requirements: distribution names, ``provider:<Name>`` and ``cpu:fp16`` (the
#: cores whose /proc/cpuinfo lists fp16 arithmetic are then reported); ``--providers`` asks
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
def externally_managed():
    # PEP 668 (Debian 12 / Raspberry Pi OS Bookworm): pip refuses the system interpreter
    import os, sysconfig
    try:
        return os.path.isfile(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
    except Exception:
        return False
def fp16_cpus():
    # cores whose /proc/cpuinfo lists native float16 arithmetic (Arm asimdhp, x86 avx512_fp16)
    cpus, cpu = [], None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "processor":
                    cpu = int(value.strip()) if value.strip().isdigit() else None
                elif key in ("flags", "features") and cpu is not None:
                    if {"asimdhp", "avx512_fp16"} & set(value.split()):
                        cpus.append(cpu)
    except OSError:
        return None
    return cpus
args = sys.argv[1:]
dists = [a for a in args if a != "--providers" and not a.startswith(("provider:", "cpu:"))]
found, error = None, None
if any(a == "--providers" or a.startswith("provider:") for a in args):
    found, error = providers()
print(json.dumps({
  "arch": platform.machine(), "python": platform.python_version(),
  "numpy": v("numpy"), "onnxruntime": v("onnxruntime", "onnxruntime-gpu"),
  "litert": v("ai-edge-litert", "tflite-runtime"),
  "requires": {n: v(n) for n in dists},
  "providers": found, "providers_error": error,
  "fp16_cpus": fp16_cpus() if "cpu:fp16" in args else None,
  "tools": {t: bool(shutil.which(t)) for t in ("setsid", "timeout", "sha256sum", "systemctl")},
  "venv": sys.prefix != getattr(sys, "base_prefix", sys.prefix),
  "externally_managed": externally_managed(),
}))
"""
