"""Output contracts (llmops.schemas): every committed report (and each example in tests/fixtures/reports)
validates against its model unchanged, a writer's dump of it is byte-identical to the file, and no NaN or
infinite value validates anywhere."""

from __future__ import annotations

import json

import pytest
from conftest import REPORT_EXAMPLES, ROOT

from llmops import schemas
from llmops.artifacts import dumps


@pytest.mark.parametrize("folder", [ROOT / "reports", REPORT_EXAMPLES], ids=["committed", "example"])
@pytest.mark.parametrize("name", sorted(schemas.CONTRACTS))
def test_committed_report_validates_and_round_trips(folder, name):
    path = folder / name
    if not path.is_file():  # a baked repo has no reports until its first dvc repro
        pytest.skip(f"{path} not written yet")
    model = schemas.read(path, schemas.CONTRACTS[name])
    assert dumps(model.model_dump(mode="json")) == path.read_text(encoding="utf-8")


def _first_float(data, where=""):
    """(dotted path, parent, key) of the first float leaf, depth first."""
    items = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in items:
        if isinstance(value, float):
            return f"{where}{key}", data, key
        if isinstance(value, (dict, list)) and value:
            found = _first_float(value, f"{where}{key}.")
            if found:
                return found
    return None


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", sorted(schemas.CONTRACTS))
def test_non_finite_values_never_validate(tmp_path, name, bad):
    data = json.loads((REPORT_EXAMPLES / name).read_text())
    where, parent, key = _first_float(data)
    parent[key] = bad
    path = tmp_path / name
    path.write_text(json.dumps(data))  # json writes NaN / Infinity; json.loads reads them back as floats
    with pytest.raises(schemas.ContractError, match=f"{path}: {where}: {bad} is not a finite number"):
        schemas.read(path, schemas.CONTRACTS[name])


@pytest.mark.parametrize("name", sorted(schemas.CONTRACTS))
def test_a_number_written_as_a_string_never_validates(tmp_path, name):
    """Issue #27: "0.9" in eval_compare.json was coerced to 0.9 and the gate passed on it."""
    data = json.loads((REPORT_EXAMPLES / name).read_text())
    where, parent, key = _first_float(data)
    parent[key] = str(parent[key])
    path = tmp_path / name
    path.write_text(json.dumps(data))
    with pytest.raises(schemas.ContractError, match=f"{path}: {where}: Input should be a valid number"):
        schemas.read(path, schemas.CONTRACTS[name])


def test_unknown_and_missing_fields_are_named(tmp_path):
    data = json.loads((REPORT_EXAMPLES / "train.json").read_text())
    data["loss_aftr"] = data.pop("loss_after")
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    with pytest.raises(schemas.ContractError, match=r"loss_after: missing; loss_aftr: Extra inputs"):
        schemas.read(path, schemas.TrainMetrics)
