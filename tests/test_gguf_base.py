"""base.model as a GGUF file: the shipped SmolLM2-135M-Instruct converted into a plain folder, pinned, loaded and
answering through the chat template; a truncated file and an unsupported architecture stop the stage by name,
leaving nothing half-written."""

from __future__ import annotations

import json

import pytest
from conftest import make_workdir, raw_params

from llmops import base, gguf_convert, model
from llmops.config import load_params
from llmops.errors import StageError

pytestmark = pytest.mark.integration  # a real 135M-parameter model: ~30 s of conversion on 2 cores


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """One conversion of the shipped file, shared by the tests below."""
    work = tmp_path_factory.mktemp("gguf")
    raw = raw_params()
    raw["base"]["model"] = "smollm2-135m-instruct"
    make_workdir(work, raw)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        metrics = base.run(load_params())
    return work, metrics


def test_the_shipped_gguf_becomes_a_pinned_plain_folder(converted, monkeypatch):
    work, metrics = converted
    monkeypatch.chdir(work)
    params = load_params()
    ident = json.loads(params.paths.base_identity.read_text())
    assert ident["source"] == "gguf" and ident["model"] == "smollm2-135m-instruct"
    assert ident["architecture"] == "llama" and ident["parameters"] == pytest.approx(134.5e6, rel=0.01)
    assert ident["gguf_sha256"] == gguf_convert.sha256_file(gguf_convert.locate("smollm2-135m-instruct"))
    assert set(ident["converter"]) == {"transformers", "gguf", "torch", "safetensors"}
    assert ident["probe_max_logit_diff"] <= 1e-4
    written = {p.name for p in params.paths.base_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "identity.json"} <= written
    assert set(ident["files"]) == written - {"identity.json"}
    config = json.loads((params.paths.base_dir / "config.json").read_text())
    assert "quantization_config" not in config  # a plain fp32 folder, loadable by anything that reads HF folders
    assert metrics["runtime_s"] > 0


def test_it_answers_through_its_own_chat_template(converted, monkeypatch):
    import torch

    work, _ = converted
    monkeypatch.chdir(work)
    paths = load_params().paths
    tokenizer, lm = model.load_tokenizer(paths), model.load_model(paths, dtype=torch.float32)
    assert tokenizer.eos_token == "<|im_end|>"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=False
    )
    assert "<|im_start|>assistant" in prompt
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    out = lm.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_a_changed_converted_file_is_refused(converted, monkeypatch, tmp_path):
    import shutil

    work, _ = converted
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    monkeypatch.chdir(copy)
    paths = load_params().paths
    with (paths.base_dir / "tokenizer.json").open("a") as f:
        f.write(" ")
    with pytest.raises(StageError, match="tokenizer.json changed since the base stage pinned it"):
        model.model_reference(paths)


def test_a_truncated_gguf_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    source = gguf_convert.locate("smollm2-135m-instruct")
    bad = tmp_path / "cut.gguf"
    with source.open("rb") as f:
        bad.write_bytes(f.read(2_000_000))  # the header and part of the tensor data
    _expect_refusal(tmp_path, monkeypatch, bad)


def test_an_architecture_transformers_cannot_read_is_a_clear_error(tmp_path, monkeypatch):
    import gguf
    import numpy as np

    bad = tmp_path / "exotic.gguf"
    writer = gguf.GGUFWriter(str(bad), arch="exotic-arch")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    _expect_refusal(tmp_path, monkeypatch, bad)


def _expect_refusal(tmp_path, monkeypatch, gguf_file):
    work = tmp_path / "work"
    raw = raw_params()
    raw["base"]["model"] = str(gguf_file)
    make_workdir(work, raw)
    monkeypatch.chdir(work)
    params = load_params()
    with pytest.raises(StageError, match=rf"{gguf_file.name}.*cannot be read as a GGUF model"):
        base.run(params)
    assert not params.paths.base_dir.exists()
    assert not list(params.paths.base_dir.parent.glob(".base.*"))  # no temporary folder left either
    assert not params.paths.report("base.json").exists()


def test_names_and_missing_files():
    assert gguf_convert.is_gguf("smollm2-135m-instruct") and gguf_convert.is_gguf("/m/x.GGUF")
    assert not gguf_convert.is_gguf("tiny") and not gguf_convert.is_gguf("meta-llama/Llama-3.1-8B-Instruct")
    with pytest.raises(StageError, match="GGUF file /nonexistent/x.gguf not found"):
        gguf_convert.locate("/nonexistent/x.gguf")
