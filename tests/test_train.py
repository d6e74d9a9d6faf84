"""LoRA behaviour on the tiny model: the base is frozen, the adapter learns, the loss goes down."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from llmops import train
from llmops.artifacts import sha256_file
from llmops.config import load_params
from llmops.tracking import mlflow


def test_lora_trains_adapter_only(tiny_workdir, in_copy_of):
    work = in_copy_of(tiny_workdir)
    base_hash = sha256_file(work / "models/base/model.safetensors")
    params = load_params()
    metrics = train.run(params)

    assert metrics["loss_after"] < metrics["loss_before"]
    assert 0 < metrics["trainable_share"] < 1 and metrics["steps"] == 8
    assert sha256_file(work / "models/base/model.safetensors") == base_hash  # base never written

    adapter = load_file(work / "models/adapter/adapter_model.safetensors")
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and all(torch.count_nonzero(t) > 0 for t in lora_b)  # B starts at zero: it moved
    config = json.loads((work / "models/adapter/adapter_config.json").read_text())
    assert config["r"] == params.train.lora.r and set(config["target_modules"]) == set(params.train.lora.target_modules)

    # the adapter loads onto the untouched base and changes its outputs
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(work / "models/base").eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    before = base(ids).logits
    tuned = PeftModel.from_pretrained(base, work / "models/adapter").eval()
    assert not torch.allclose(before, tuned(ids).logits)

    perf = json.loads((work / "reports/train_perf.json").read_text())
    assert perf["tokens_per_s"] > 0 and "torch" in perf["environment"]["packages"]
    curve = (work / "reports/train_loss.csv").read_text().splitlines()
    assert curve[0] == "step,loss,learning_rate" and len(curve) == 1 + 8 // 2

    run_id = json.loads((work / "reports/mlflow_run.json").read_text())["run_id"]
    run = mlflow().get_run(run_id)  # the test's own store (MLFLOW_TRACKING_URI under tmp_path)
    assert run.data.params["train.lora.r"] == str(params.train.lora.r)
    assert run.data.metrics["train.loss_after"] == metrics["loss_after"]


def test_unknown_target_module_is_named(tiny_workdir, in_copy_of):
    import pytest
    import yaml

    from llmops.errors import StageError

    work = in_copy_of(tiny_workdir)
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["train"]["lora"]["target_modules"] = ["q_proj", "query_key_value"]
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(StageError, match="query_key_value"):
        train.run(load_params())
    assert not (work / "models/adapter").exists()
