"""The shipped board catalogue: every descriptor validates and looks like its published specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgedeploy.boards.catalog import list_targets, load_target
from edgedeploy.errors import TargetError
from edgedeploy.resources import targets_dir

SHIPPED = ["hikey970", "jetson-orin-nano", "jetson-tx2", "jetson-xavier-nx", "odroid-xu4",
           "rk3399", "rpi4", "rpi5"]


def test_the_catalogue_lists_every_required_board_and_local() -> None:
    names = list_targets()
    assert names[-1] == "local"
    assert set(SHIPPED) <= set(names)


@pytest.mark.parametrize("name", sorted(p.stem for p in targets_dir().glob("*.yaml")))
def test_every_descriptor_validates_and_cites_its_sources(name: str) -> None:
    target = load_target(name)
    assert target.name == name
    assert target.all_cpus == list(range(len(target.all_cpus)))  # Linux numbers cpus densely
    assert "native" in target.engines and not target.simulated
    header = (targets_dir() / f"{name}.yaml").read_text().splitlines()[:6]
    assert any(line.startswith("#") and "Sources" in line for line in header)
    for c in target.clusters:
        assert 0 < c.active_power_w_per_core < 5 and c.max_freq_mhz <= 3000


def test_jetson_tx2_matches_its_datasheet() -> None:
    tx2 = load_target("jetson-tx2")
    assert tx2.cluster("denver").cpu_ids == [1, 2]
    assert tx2.cluster("a57").cpu_ids == [0, 3, 4, 5]
    assert tx2.gpu is not None and tx2.gpu.cuda_cores == 256
    assert tx2.gpu.fp32_gflops == pytest.approx(256 * 2 * tx2.gpu.max_freq_mhz / 1000, rel=0.01)
    assert "onnxruntime-cuda" in tx2.engines and tx2.family == "jetson"


def test_big_little_boards_have_two_clusters_with_different_cores() -> None:
    for name in ("rk3399", "hikey970", "odroid-xu4"):
        t = load_target(name)
        assert len({c.core_type for c in t.clusters}) == 2, name
    assert load_target("odroid-xu4").arch == "armv7l"


def test_unknown_board_names_suggest_and_list() -> None:
    with pytest.raises(TargetError) as info:
        load_target("jetson-tx3")
    assert "did you mean 'jetson-tx2'" in str(info.value)
    assert "rpi4" in (info.value.hint or "")


def test_a_board_can_be_loaded_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text((targets_dir() / "rpi5.yaml").read_text())
    assert load_target(path).name == "rpi5"
    assert load_target(str(path)).name == "rpi5"
    with pytest.raises(TargetError, match="file not found"):
        load_target(tmp_path / "none.yaml")


def test_local_is_detected() -> None:
    local = load_target("local")
    assert local.name == "local" and local.fingerprint
