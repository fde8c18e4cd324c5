"""Pipeline specs: the shipped ones load, and mistakes name the file and field."""

from __future__ import annotations

import pytest

from reloop_cli.errors import BadInput
from reloop_cli.spec.pipeline import load_spec, spec_from_dict
from tests.helpers import REPO


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


def test_environment_overrides_the_file_and_options_override_both(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[data]\ncategorical=["a"]\n[train]\nalpha = 0.2\nepochs = 3\n')
    env = {
        "RELOOP_TRAIN_ALPHA": "0.7",
        "RELOOP_MODEL_HIDDEN_UNITS": "[8, 4]",
        "RELOOP_WORKSPACE": "/elsewhere",
    }
    spec = load_spec(path, environ=env)
    assert spec.train.alpha == 0.7  # environment over file
    assert spec.train.epochs == 3  # file over default
    assert spec.model.hidden_units == (8, 4)
    assert spec.override("train", alpha=0.1).train.alpha == 0.1  # option over environment


def test_a_bad_environment_value_is_named(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[data]\ncategorical=["a"]\n')
    with pytest.raises(BadInput, match=r"alpha: 3\.0 is outside"):
        load_spec(path, environ={"RELOOP_TRAIN_ALPHA": "3.0"})
    with pytest.raises(BadInput, match="unknown key 'alpah'"):
        load_spec(path, environ={"RELOOP_TRAIN_ALPAH": "0.3"})


def test_negative_gradient_clip_is_refused_naming_the_key():
    with pytest.raises(BadInput, match=r"train\.max_grad_norm.*must be >= 0"):
        spec_from_dict(
            {"data": {"categorical": ["a"]}, "train": {"max_grad_norm": -1.0}}, "clip.toml"
        )


@pytest.mark.parametrize(
    "section,setting,says",
    [
        ("model", 'embedding_dim = "eight"', "[model] embedding_dim = 'eight': must be a whole"),
        ("train", 'epochs = "two"', "[train] epochs = 'two': must be a whole number"),
        ("model", 'hidden_units = "16,8"', "hidden_units = '16,8': must be a list of whole"),
        ("gate", 'min_clicks = "20"', "[gate] min_clicks = '20': must be a whole number"),
        ("adapt", 'memory_bits = "twelve"', "memory_bits = 'twelve': must be a whole number"),
        ("adapt", "memory_arrays = 1.5", "[adapt] memory_arrays = 1.5: must be a whole number"),
        ("train", "alpha = true", "[train] alpha = True: must be a number"),
        ("serving", "allowed_origins = 3", "allowed_origins = 3: must be a list of texts"),
        ("adapt", "memory_bits = 24\nmemory_arrays = 512", "= 8,589,934,592 buckets (96.0 GiB)"),
        ("adapt", 'group_field = "position"', "adapt: 'position' is no field of [data]"),
    ],
)
def test_a_setting_of_the_wrong_type_or_size_is_one_line_in_every_command(
    tmp_path, section, setting, says
):
    """Reproduction: these were `internal error: TypeError` in every command, `spec check`
    included; memory_arrays = 1.5 and a 96 GiB memory passed `spec check`; and the bracketed
    part of an error text was eaten (`is no field of ` where `[data]` was meant)."""
    from typer.testing import CliRunner

    from reloop_cli.cli import app

    path = tmp_path / "mistyped.toml"
    path.write_text(f'[data]\ncategorical = ["a"]\n[{section}]\n{setting}\n', encoding="utf-8")
    workspace = str(tmp_path / "ws")
    for command in (
        ["spec", "check", str(path)],
        ["simulate", "--spec", str(path), "-w", workspace],
    ):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        assert says in result.output and "internal error" not in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "ws").exists()  # a refused command leaves nothing behind


def test_a_binary_file_as_spec_is_one_line(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(BadInput, match="not UTF-8 text"):
        load_spec(path)
