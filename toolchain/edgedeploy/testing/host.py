"""This host as a benchmark's results file names it: the CPU can differ from one run to the next
(the project's 2-vCPU VM has been an Intel Xeon and an AMD EPYC), and a figure is only read
right beside the CPU that measured it."""

from __future__ import annotations

import os


def describe() -> str:
    """Its CPU count and model, as plans detect them (``"2-vCPU AMD EPYC"``)."""
    from edgedeploy.boards.detect import detect_local

    return f"{os.cpu_count()}-vCPU {detect_local().description.removeprefix('this host: ')}"
