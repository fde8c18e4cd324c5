"""Pipeline specs: the shipped ones load, and mistakes name the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from reloop_cli.errors import BadInput
from reloop_cli.spec import load_spec

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["sample", "frappe"])
def test_shipped_specs_load(name):
    spec = load_spec(REPO / "pipelines" / f"{name}.toml")
    assert spec.name == name
    assert spec.data.categorical


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[data]\ncategorical=["a"]\n[train]\nlearning_rat = 0.1\n')
    with pytest.raises(BadInput, match=r"bad.toml \[train\]: unknown key 'learning_rat'"):
        load_spec(path)


def test_alpha_outside_unit_interval_is_refused(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[data]\ncategorical=["a"]\n[train]\nalpha = 1.5\n')
    with pytest.raises(BadInput, match=r"alpha: 1\.5 is outside"):
        load_spec(path)


def test_override_validates_like_the_file():
    spec = load_spec(REPO / "pipelines" / "sample.toml")
    with pytest.raises(BadInput, match="'focal' is not one of"):
        spec.override("train", loss="focal")
    assert spec.override("train", alpha=None) is spec
