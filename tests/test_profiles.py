"""Profiles (profiles/<name>.yaml): params overrides checked against params.yaml, run as one `dvc exp run`."""

from __future__ import annotations

import pytest
import yaml
from conftest import ROOT

from llmops import profiles
from llmops.errors import ConfigError


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_the_shipped_profile_validates_and_becomes_one_exp_run(in_repo):
    overrides = profiles.load("smollm2")
    assert overrides["base.model"] == "smollm2-135m-instruct"
    cmd = profiles.exp_run_command("smollm2", overrides)
    assert cmd[:5] == ["dvc", "exp", "run", "-n", "smollm2"]
    sets = dict(arg.split("=", 1) for arg in cmd[6::2])
    assert cmd[5::2] == ["-S"] * len(overrides)
    # what -S receives parses back (as YAML, like DVC does) to the profile's own values
    assert {k: yaml.safe_load(v) for k, v in sets.items()} == overrides


@pytest.mark.parametrize(
    "text, message",
    [
        ("train.epochz: 3\n", "train.epochz: params.yaml has no key 'epochz'"),
        ("trian.epochs: 3\n", "params.yaml has no section 'trian'"),
        ("train.epochs: -1\n", "do not validate"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_a_bad_profile_names_the_key_and_runs_nothing(tmp_path, monkeypatch, text, message):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "bad.yaml").write_text(text)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message):
        profiles.load("bad")


def test_an_unknown_profile_lists_the_known_ones(in_repo):
    with pytest.raises(ConfigError, match=r"no such profile \(known: \[.*'smollm2'"):
        profiles.load("nope")
