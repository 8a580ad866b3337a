"""The profile file: round trip, append, export/import, and clean errors that touch nothing."""

from __future__ import annotations

import json

import pytest

from edgedeploy.boards.catalog import load_target
from edgedeploy.costmodel import CoreConfig, Sample
from edgedeploy.costmodel import profile as pm
from edgedeploy.costmodel.shapes import conv_descriptor
from edgedeploy.errors import InputError


def _samples(n=3, tag="fit"):
    return [Sample(conv_descriptor(8 * (i + 1), 16, 14, 3, stride=1 + i % 2), "im2col_gemm/nchw",
                   CoreConfig("a72", 1 + i % 4), 1.5 + i, 5, 0.01, tag) for i in range(n)]


def test_profile_lives_under_xdg_cache_home_keyed_by_fingerprint(_tmp_cache):
    target = load_target("rpi4")
    path = pm.profile_path(target)
    assert path.parent == _tmp_cache / "edgedeploy" / "profiles"
    assert path.stem == pm.target_fingerprint(target)


def test_round_trip_and_append_keep_every_sample():
    target = load_target("rpi4")
    prof = pm.open_profile(target)
    prof.append(_samples(3))
    prof.save()
    again = pm.open_profile(target)
    assert again.samples == prof.samples
    again.append(_samples(2, tag="heldout"))
    again.save()
    third = pm.open_profile(target)
    assert len(third.samples) == 5 and len(third.select("heldout")) == 2
    assert third.runtime["numpy"] and third.descriptor["name"] == "rpi4"
    assert pm.profile_target(third).name == "rpi4"


def test_export_then_import_into_a_fresh_cache_merges_without_duplicates(tmp_path, monkeypatch):
    target = load_target("rpi4")
    prof = pm.open_profile(target)
    prof.append(_samples(3))
    prof.save()
    exported = pm.export_profile(target, tmp_path / "rpi4.profile.json")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other"))
    merged = pm.import_profile(target, exported)
    assert len(merged.samples) == 3
    assert len(pm.import_profile(target, exported).samples) == 3  # idempotent
    assert merged.path.is_relative_to(tmp_path / "other")


@pytest.mark.parametrize("content", [b"{not json", b"\x00\xff\xfe binary", b"[]",
                                     b'{"format": "edgedeploy-profile", "schema_version": 99}',
                                     b'{"format": "edgedeploy-profile", "schema_version": 1, '
                                     b'"target": {"name": "x"}, "samples": [{}]}'])
def test_corrupt_profile_is_a_clear_input_error_and_left_byte_identical(content):
    target = load_target("rpi4")
    path = pm.profile_path(target)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(pm.ProfileError) as err:
        pm.open_profile(target)
    assert isinstance(err.value, InputError) and err.value.hint
    assert str(path) in err.value.message
    assert path.read_bytes() == content


def test_foreign_profile_is_refused_on_import_and_nothing_changes(tmp_path):
    rpi = load_target("rpi4")
    other = pm.open_profile(load_target("rk3399"))
    other.append(_samples(2))
    foreign = other.save(tmp_path / "rk3399.json")
    mine = pm.open_profile(rpi)
    mine.append(_samples(1))
    mine.save()
    before_mine, before_foreign = mine.path.read_bytes(), foreign.read_bytes()
    with pytest.raises(pm.ProfileError, match="fingerprint") as err:
        pm.import_profile(rpi, foreign)
    assert "transfer-from" in err.value.hint
    assert mine.path.read_bytes() == before_mine and foreign.read_bytes() == before_foreign


def test_save_is_atomic_no_temporary_files_remain():
    target = load_target("rpi4")
    prof = pm.open_profile(target)
    prof.append(_samples(2))
    prof.save()
    assert [p.name for p in prof.path.parent.iterdir()] == [prof.path.name]
    json.loads(prof.path.read_text())


def test_export_without_a_profile_says_how_to_make_one(tmp_path):
    with pytest.raises(pm.ProfileError, match="no profile"):
        pm.export_profile(load_target("rpi4"), tmp_path / "x.json")
