"""params.yaml validation: every wrong knob fails before any work, naming the dotted key."""

from __future__ import annotations

import pytest
import yaml
from conftest import ROOT, raw_params

from llmops.config import load_params
from llmops.errors import ConfigError


def write(tmp_path, raw) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_shipped_params_are_valid(monkeypatch):
    monkeypatch.chdir(ROOT)
    params = load_params()
    assert params.base.model == "tiny"
    assert params.eval.domain_task in params.eval.domain_tasks


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda p: p["train"]["lora"].update(rr=8), "train.lora.rr"),
        (lambda p: p["train"]["lora"].update(r=0), "train.lora.r"),
        (lambda p: p["train"].update(learning_rate="fast"), "train.learning_rate"),
        (lambda p: p["train"].update(accelerate_config="nope"), "train.accelerate_config"),
        (lambda p: p["prepare"].update(truncation="sometimes"), "prepare.truncation"),
        (lambda p: p["prepare"].update(label_regex="Category: \\w+"), "prepare.label_regex"),
        (lambda p: p["prepare"].update(label_regex="(unclosed"), "prepare.label_regex"),
        (lambda p: p["base"]["tiny"].update(hidden_size=66), "base.tiny"),
        (lambda p: p["judge"].update(provider="remote", base_url=None), "judge"),
        (lambda p: p.pop("gate"), "gate"),
        (lambda p: p.update(extra_section={}), "extra_section"),
    ],
)
def test_bad_params_name_the_key(tmp_path, monkeypatch, mutate, key):
    monkeypatch.chdir(ROOT)  # validators resolve configs/ and prompts/ relative to the repo
    raw = raw_params()
    mutate(raw)
    with pytest.raises(ConfigError) as err:
        load_params(write(tmp_path, raw))
    assert key in str(err.value)
    assert "params.yaml" in str(err.value)


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "absent.yaml")


def _key_paths(tree: dict, prefix: tuple = ()) -> list[tuple]:
    paths = []
    for key, value in tree.items():
        paths.append((*prefix, key))
        if isinstance(value, dict):
            paths += _key_paths(value, (*prefix, key))
    return paths


def test_every_key_is_required(tmp_path, monkeypatch):
    """params.yaml is the only source of defaults: deleting any key (section or leaf) fails by its dotted name."""
    monkeypatch.chdir(ROOT)
    assert load_params(write(tmp_path, raw_params()))  # nothing removed: loads
    paths = _key_paths(raw_params())
    assert len(paths) > 100  # every section and knob, not a sample
    for path in paths:
        raw = raw_params()
        parent = raw
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
        with pytest.raises(ConfigError) as err:
            load_params(write(tmp_path, raw))
        assert f"{'.'.join(path)}: missing" in str(err.value), str(err.value)


def test_label_regex_and_label_prefix_must_describe_one_answer_format():
    """Issue #26: triage_gen reads labels with the regex, triage_mc scores them after the prefix."""
    from conftest import raw_params
    from pydantic import ValidationError

    from llmops.config import Params

    raw = raw_params()  # a baked repo's own format may differ: set both sides here
    raw["prepare"].update(label_regex=r"Category:\s*([A-Za-z0-9_\-]+)", label_prefix="Route:")
    with pytest.raises(ValidationError, match="must describe the same answer format"):
        Params.model_validate(raw)
    raw["prepare"]["label_regex"] = r"Route:\s*([A-Za-z0-9_\-]+)"
    assert Params.model_validate(raw).prepare.label_prefix == "Route:"
