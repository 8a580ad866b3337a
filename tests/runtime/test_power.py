"""Board power from tegrastats logs: formats across Jetson generations, log states, the cache."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from edgedeploy.runtime import power
from edgedeploy.runtime.power import (
    NO_SENSOR,
    PowerMeter,
    energy_mj,
    none_reading,
    parse_tegrastats,
    read_power,
)

# Real-format lines (L4T 32: unitless mW; L4T 35+: mW units, optional date prefix).
TX2 = (
    "RAM 2133/7852MB (lfb 1205x4MB) SWAP 0/3926MB (cached 0MB) "
    "CPU [5%@345,off,off,3%@345,2%@345,2%@345] EMC_FREQ 0%@1866 GR3D_FREQ 0%@114 APE 150 "
    "PLL@39C MCPU@39C PMIC@100C Tboard@35C GPU@37C BCPU@39C thermal@38.1C Tdiode@36.75C "
    "VDD_SYS_GPU 153/153 VDD_SYS_SOC 459/459 VDD_4V0_WIFI 0/0 VDD_IN 3269/3100 "
    "VDD_SYS_CPU 153/153 VDD_SYS_DDR 306/306"
)
NANO = (
    "RAM 1263/3956MB (lfb 264x4MB) SWAP 0/1978MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
    "CPU [11%@102,9%@102,6%@102,4%@102] EMC_FREQ 2%@1600 GR3D_FREQ 0%@76 APE 25 PLL@25C "
    "CPU@27C PMIC@100C GPU@26C AO@33C thermal@26.5C POM_5V_IN 2040/1990 POM_5V_GPU 0/0 "
    "POM_5V_CPU 408/408"
)
XAVIER_NX_L4T32 = (
    "RAM 1814/7765MB (lfb 896x4MB) SWAP 0/3883MB (cached 0MB) "
    "CPU [3%@1190,1%@1190,0%@1190,1%@1190,off,off] EMC_FREQ 0% GR3D_FREQ 0% AO@36C GPU@36.5C "
    "PMIC@100C AUX@35C CPU@37C thermal@36.45C VDD_IN 4137/4137 VDD_CPU_GPU_CV 490/490 "
    "VDD_SOC 1307/1307"
)
XAVIER_NX_L4T35 = (
    "RAM 2012/6854MB (lfb 540x4MB) SWAP 0/3427MB (cached 0MB) "
    "CPU [4%@1420,2%@1420,1%@1420,0%@1420,off,off] EMC_FREQ 0%@1600 GR3D_FREQ 0%@114 "
    "NVDEC off NVDLA0 off NVDLA1 off APE 150 AUX@37.5C CPU@39C thermal@38.4C AO@37C GPU@38C "
    "PMIC@50C VDD_IN 5000mW/4800mW VDD_CPU_GPU_CV 1000mW/950mW VDD_SOC 1200mW/1180mW"
)
ORIN_NANO = (
    "08-20-2024 10:15:32 RAM 2370/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) "
    "CPU [2%@729,1%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@2133 GR3D_FREQ 0%@[305] "
    "NVENC off NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 cpu@47.5C soc2@46.968C "
    "soc0@46.343C gpu@46.687C tj@47.5C soc1@46.593C "
    "VDD_IN 4567mW/4400mW VDD_CPU_GPU_CV 534mW/534mW VDD_SOC 1371mW/1371mW"
)
# No total rail on these two: the sum is all tegrastats can give.
AGX_XAVIER = (
    "RAM 1615/15817MB (lfb 3087x4MB) SWAP 0/7908MB (cached 0MB) "
    "CPU [1%@1190,0%@1190,0%@1190,0%@1190,off,off,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 0%@1377 "
    "APE 150 MTS fg 0% bg 0% AO@37C GPU@37.5C Tdiode@39.75C PMIC@100C AUX@36.5C CPU@38C "
    "thermal@37.4C Tboard@37C GPU 0/0 CPU 307/307 SOC 1383/1383 CV 0/0 VDDRQ 153/153 "
    "SYS5V 1488/1488"
)
AGX_ORIN = (
    "RAM 2448/30536MB (lfb 6329x4MB) SWAP 0/15268MB (cached 0MB) "
    "CPU [0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@2133 "
    "GR3D_FREQ 0%@[305,305] VIC_FREQ 729 APE 174 CV0@-256C CPU@43.875C Tboard@32C "
    "SOC2@40.437C Tdiode@34.5C SOC0@40.406C CV1@-256C GPU@-256C tj@43.875C SOC1@40.125C "
    "CV2@-256C VDD_GPU_SOC 2768mW/2768mW VDD_CPU_CV 395mW/395mW VIN_SYS_5V0 2312mW/2312mW "
    "VDDQ_VDD2_1V8AO 403mW/403mW"
)
TX1_NO_RAILS = (
    "RAM 3468/3983MB (lfb 48x4MB) SWAP 873/8192MB (cached 295MB) cpu [17%,13%,29%,5%]@408 "
    "EMC 1%@408 APE 25 GR3D 3%@76"
)


def _log(path: Path, *lines: str, mode: str = "w") -> Path:
    with open(path, mode) as fh:
        fh.writelines(line + "\n" for line in lines)
    return path


# --- parser -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "watts", "source"),
    [
        (TX2, 3.269, "tegrastats:VDD_IN"),
        (NANO, 2.040, "tegrastats:POM_5V_IN"),
        (XAVIER_NX_L4T32, 4.137, "tegrastats:VDD_IN"),
        (XAVIER_NX_L4T35, 5.000, "tegrastats:VDD_IN"),
        (ORIN_NANO, 4.567, "tegrastats:VDD_IN"),
    ],
)
def test_total_rail_instantaneous_value(line: str, watts: float, source: str) -> None:
    parsed = parse_tegrastats(line)
    assert parsed is not None
    assert parsed.power_w == pytest.approx(watts)
    assert parsed.source == source
    assert not parsed.partial


def test_all_rails_and_nothing_else() -> None:
    parsed = parse_tegrastats(TX2)
    assert parsed is not None
    assert parsed.rails == {"VDD_SYS_GPU": 153, "VDD_SYS_SOC": 459, "VDD_4V0_WIFI": 0,
                            "VDD_IN": 3269, "VDD_SYS_CPU": 153, "VDD_SYS_DDR": 306}
    nano = parse_tegrastats(NANO)
    assert nano is not None and set(nano.rails) == {"POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"}
    orin = parse_tegrastats(ORIN_NANO)
    assert orin is not None and orin.rails == {"VDD_IN": 4567, "VDD_CPU_GPU_CV": 534,
                                               "VDD_SOC": 1371}


@pytest.mark.parametrize(
    ("line", "watts", "n"),
    [(AGX_XAVIER, (0 + 307 + 1383 + 0 + 153 + 1488) / 1000, 6),
     (AGX_ORIN, (2768 + 395 + 2312 + 403) / 1000, 4),
     ("VDD_CPU_GPU_CV 534mW/534mW VDD_SOC 1371mW/1371mW", 1.905, 2)],
)
def test_partial_rails_are_summed_and_flagged(line: str, watts: float, n: int) -> None:
    parsed = parse_tegrastats(line)
    assert parsed is not None
    assert parsed.partial
    assert parsed.power_w == pytest.approx(watts)
    assert len(parsed.rails) == n
    assert parsed.source.startswith("tegrastats:sum(")


@pytest.mark.parametrize(
    "line",
    ["", "   ", TX1_NO_RAILS, "garbage \x00\xff line", "VDD_IN", "VDD_IN abc/def",
     "VDD_IN 12/34MB", "vdd_in 100/100", "VDD_IN 5000mW", "tegrastats: error opening file"],
)
def test_lines_without_rails(line: str) -> None:
    assert parse_tegrastats(line) is None


# --- read_power ---------------------------------------------------------------------------------
def test_read_power_newest_line(tmp_path: Path) -> None:
    log = _log(tmp_path / "tegrastats.log", TX2, XAVIER_NX_L4T35, ORIN_NANO)
    reading = read_power(log)
    assert reading.power_w == pytest.approx(4.567)
    assert reading.source == "tegrastats:VDD_IN"
    assert reading.note == ""
    assert reading.sampled_at == pytest.approx(log.stat().st_mtime)


def test_read_power_partial_says_so(tmp_path: Path) -> None:
    reading = read_power(_log(tmp_path / "t.log", AGX_ORIN))
    assert reading.power_w == pytest.approx(5.878)
    assert reading.note.startswith("partial:")


def test_missing_log(tmp_path: Path) -> None:
    reading = read_power(tmp_path / "nope.log")
    assert reading.power_w is None and reading.sampled_at is None
    assert reading.note == f"no tegrastats log at {tmp_path / 'nope.log'}"


def test_empty_log(tmp_path: Path) -> None:
    log = tmp_path / "t.log"
    log.write_text("")
    reading = read_power(log)
    assert reading.power_w is None
    assert "no complete line" in reading.note


def test_unreadable_path_is_a_note_not_an_error(tmp_path: Path) -> None:
    reading = read_power(tmp_path)  # a directory
    assert reading.power_w is None
    assert "cannot read tegrastats log" in reading.note


def test_stale_log(tmp_path: Path) -> None:
    log = _log(tmp_path / "t.log", ORIN_NANO)
    old = time.time() - 37
    os.utime(log, (old, old))
    reading = read_power(log, max_age_s=5.0)
    assert reading.power_w is None
    assert reading.note == "log is stale (last line 37 s old)"
    assert read_power(log, max_age_s=60.0).power_w == pytest.approx(4.567)


def test_garbage_last_line(tmp_path: Path) -> None:
    reading = read_power(_log(tmp_path / "t.log", ORIN_NANO, TX1_NO_RAILS))
    assert reading.power_w is None
    assert reading.note == "no power rail in tegrastats output"


def test_log_that_grows_while_read(tmp_path: Path) -> None:
    log = _log(tmp_path / "t.log", TX2)
    assert read_power(log).power_w == pytest.approx(3.269)
    _log(log, TX2.replace("VDD_IN 3269/3100", "VDD_IN 7001/3500"), mode="a")
    assert read_power(log).power_w == pytest.approx(7.001)
    # A line still being written (no newline yet) is not trusted: the last complete one is.
    with open(log, "a") as fh:
        fh.write("RAM 2133/7852MB VDD_SYS_GPU 153/153 VDD_IN 9")
    assert read_power(log).power_w == pytest.approx(7.001)
    with open(log, "a") as fh:
        fh.write("999/4000\n\n")
    assert read_power(log).power_w == pytest.approx(9.999)


def test_big_log_reads_only_the_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "t.log"
    body = (TX2 + "\n").encode()
    with open(log, "wb") as fh:
        fh.write(body * (4_000_000 // len(body)))  # ~4 MB of history
        fh.write(ORIN_NANO.encode() + b"\n")
    assert log.stat().st_size > 3_000_000

    read_bytes = []
    real_open = open

    class Counting:
        def __init__(self, fh):  # type: ignore[no-untyped-def]
            self._fh = fh

        def __enter__(self):  # type: ignore[no-untyped-def]
            return self

        def __exit__(self, *exc: object) -> None:
            self._fh.close()

        def read(self, n: int = -1) -> bytes:
            data = self._fh.read(n)
            read_bytes.append(len(data))
            return data

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(self._fh, name)

    monkeypatch.setattr(power, "open", lambda *a, **k: Counting(real_open(*a, **k)),
                        raising=False)
    assert read_power(log).power_w == pytest.approx(4.567)
    assert 0 < sum(read_bytes) <= 64 * 1024
    monkeypatch.undo()

    t0 = time.perf_counter()
    for _ in range(200):
        read_power(log)
    assert time.perf_counter() - t0 < 1.0


def test_line_longer_than_the_tail(tmp_path: Path) -> None:
    log = _log(tmp_path / "t.log", "x" * (power._TAIL_BYTES * 2))
    reading = read_power(log)
    assert reading.power_w is None
    assert "no complete line" in reading.note


# --- meter, none, energy ------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_meter_caches_for_min_interval(tmp_path: Path) -> None:
    log = _log(tmp_path / "t.log", XAVIER_NX_L4T32)
    clock = FakeClock()
    meter = PowerMeter(log, clock=clock)
    first = meter.sample()
    assert first.power_w == pytest.approx(4.137)
    _log(log, ORIN_NANO, mode="a")
    clock.t += 0.5
    assert meter.sample() is first
    clock.t += 0.5
    assert meter.sample().power_w == pytest.approx(4.567)
    log.unlink()
    clock.t += 0.9
    assert meter.sample().power_w == pytest.approx(4.567)
    clock.t += 0.2
    assert meter.sample().note.startswith("no tegrastats log at")


def test_meter_without_sensor() -> None:
    meter = PowerMeter(None)
    reading = meter.sample()
    assert reading == none_reading()
    assert reading.power_w is None and reading.source == "none" and reading.note == NO_SENSOR
    assert PowerMeter(None, no_sensor="Raspberry Pi: no sensor").sample().note == (
        "Raspberry Pi: no sensor")


def test_energy_math() -> None:
    assert energy_mj(5.0, 20.0) == pytest.approx(100.0)  # 5 W over 20 ms = 100 mJ
    assert energy_mj(4.567, 1.0) == pytest.approx(4.567)
    assert energy_mj(3.0, 0.0) == 0.0
    assert energy_mj(None, 20.0) is None
    with pytest.raises(ValueError):
        energy_mj(5.0, -1.0)


def test_report_fields(tmp_path: Path) -> None:
    reading = read_power(_log(tmp_path / "t.log", XAVIER_NX_L4T35))
    assert reading.fields(10.0) == {"power_w": 5.0, "energy_mj": pytest.approx(50.0),
                                    "power_source": "tegrastats:VDD_IN", "power_note": ""}
    assert none_reading("why").fields(10.0) == {"power_w": None, "energy_mj": None,
                                                "power_source": "none", "power_note": "why"}
