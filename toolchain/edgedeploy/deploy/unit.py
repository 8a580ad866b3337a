"""The systemd user unit that keeps a board's runner up across crashes, logouts and reboots.

Why an installed unit and not only ``systemd-run``: a transient unit restarts a crashed runner but
is gone after a reboot. Where the board's user manager lingers (it runs without a login session
and starts at boot), the deployer installs this unit into ``~/.config/systemd/user`` and enables
it; it starts whatever release ``current`` points at (``@current``), so a push or rollback only
restarts it. The START script lives in ``run/start.sh`` on the board: a fixed text, so the unit's
command line carries nothing but quoted paths.
"""

from __future__ import annotations

from edgedeploy.errors import EdgeDeployError

#: The release argument that makes the START script run the release ``current`` points at.
CURRENT = "@current"


def unit_path(home: str, unit: str) -> str:
    return f"{home}/.config/systemd/user/{unit}.service"


def quote(arg: str) -> str:
    """One ExecStart argument in systemd's syntax: double-quoted, ``\\`` and ``"`` escaped, and
    ``%`` doubled (systemd expands specifiers before it splits words)."""
    if any(ch in arg for ch in "\n\r\0"):
        raise EdgeDeployError(f"install path {arg!r} cannot be written into a systemd unit",
                              hint="use an install path without control characters")
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def render(root: str, entry: str) -> str:
    """The unit's text: Restart=on-failure with the supervisor's policy (a bad bundle, exit 2,
    is not restarted), started at boot by ``default.target``."""
    start = " ".join(quote(a) for a in ("/bin/sh", f"{root}/run/start.sh", root, CURRENT,
                                         entry, "once"))
    return "\n".join([
        "# Installed by edgedeploy push; `edgedeploy stop` disables it.",
        "[Unit]",
        f"Description=edgedeploy runner in {root.replace('%', '%%')}",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={start}",
        "Restart=on-failure",
        "RestartSec=2",
        "RestartPreventExitStatus=2",
        "KillMode=control-group",
        "TimeoutStopSec=10",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ])
