"""base: the tiny build is a standard HF folder; real models are pinned, never downloaded in tests."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import raw_params

from llmops import base
from llmops import model as loader
from llmops.config import load_params
from llmops.errors import StageError


def test_tiny_base_is_a_standard_folder(tiny_workdir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_workdir / "models/base"
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|user|>\nhi<|end|>\n<|assistant|>\n"
    assert tok.eos_token == "<|end|>" and tok.pad_token == "<|pad|>"
    assert model.config.model_type == "llama"
    ident = json.loads((folder / "identity.json").read_text())
    assert ident["source"] == "built" and len(ident["config_sha256"]) == 64
    report = json.loads((tiny_workdir / "reports/base.json").read_text())
    assert report["pretrain_loss_final"] < report["pretrain_loss_first"]  # pretraining learned something


def set_model(work, model):
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["base"]["model"] = model
    (work / "params.yaml").write_text(yaml.safe_dump(raw))


def test_local_real_model_is_pinned_not_copied(tiny_workdir, in_copy_of, tmp_path):
    work = in_copy_of(tiny_workdir)
    external = tmp_path / "external-model"
    import shutil

    shutil.copytree(work / "models/base", external)
    set_model(work, str(external))
    base.run(load_params())
    ident = json.loads((work / "models/base/identity.json").read_text())
    assert ident["source"] == "local" and ident["path"] == str(external)
    assert sorted(p.name for p in (work / "models/base").iterdir()) == ["identity.json"]  # no weights copied
    assert loader.model_reference(load_params().paths) == (str(external), None)
    assert loader.load_tokenizer(load_params().paths).eos_token == "<|end|>"
    assert "model.safetensors" in ident["files"] and len(ident["weights_sha256"]) == 64


def test_local_base_is_pinned_by_its_weights_not_only_its_config(tmp_path, monkeypatch):
    """Overwriting a local base's weights after the base stage is caught by every stage that loads it."""
    import os

    from llmops.config import Base

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"weights v1")
    ident = base.resolve_external(Base(**{**raw_params()["base"], "model": str(folder)}))
    assert set(ident["files"]) == {"config.json", "model.safetensors"}
    loader.verify_local(ident)  # unchanged: fine
    st = (folder / "model.safetensors").stat()
    (folder / "model.safetensors").write_bytes(b"weights v2")  # same size, other bytes
    os.utime(folder / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(StageError, match="model.safetensors changed since the base stage pinned it.*dvc repro -f base"):
        loader.verify_local(ident)
    (folder / "model.safetensors").write_bytes(b"weights v1")  # restored bytes (new mtime): re-hashed, accepted
    loader.verify_local(ident)
    (folder / "model-00002.safetensors").write_bytes(b"a new shard")
    with pytest.raises(StageError, match="model-00002.safetensors"):
        loader.verify_local(ident)


def test_hub_id_offline_fails_clearly_without_downloading(tiny_workdir, in_copy_of, monkeypatch, tmp_path):
    work = in_copy_of(tiny_workdir)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # empty cache: nothing to resolve from
    set_model(work, "meta-llama/Llama-3.1-8B-Instruct")
    with pytest.raises(StageError, match="cannot resolve"):
        base.run(load_params())
    assert (work / "models/base/config.json").exists()  # the previous output is left as it was


def test_bad_corpus_line_is_located(tiny_workdir, in_copy_of):
    from llmops.errors import DataError

    work = in_copy_of(tiny_workdir)
    with open(work / "data/raw/general_text.jsonl", "a") as fh:
        fh.write('{"txt": "oops"}\n')
    n = len((work / "data/raw/general_text.jsonl").read_text().splitlines())
    with pytest.raises(DataError) as err:
        base.run(load_params())
    assert err.value.line == n and err.value.field == "text"
