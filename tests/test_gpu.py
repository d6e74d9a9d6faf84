"""GPU tier: the same train stage in bf16 on CUDA. Skipped on machines without a GPU (see conftest)."""

from __future__ import annotations

import json

import pytest
import yaml

from llmops import train
from llmops.config import load_params

pytestmark = pytest.mark.gpu


def test_train_bf16_on_gpu(tiny_workdir, in_copy_of):
    work = in_copy_of(tiny_workdir)
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["train"].update(precision="auto", accelerate_config="single_gpu")
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    metrics = train.run(load_params())
    perf = json.loads((work / "reports/train_perf.json").read_text())
    assert metrics["loss_after"] < metrics["loss_before"]
    assert perf["environment"]["gpus"] and perf["peak_gpu_mb"] > 0
