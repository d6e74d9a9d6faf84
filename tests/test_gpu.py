"""GPU tier: the train stage in bf16 on CUDA, through the single-GPU launcher config, and eval on vLLM vs hf.

Run:  pytest tests/test_gpu.py -m gpu        (on a CUDA machine; skipped elsewhere, see conftest)
      python bench/gpu.py                   (the ~0.5B throughput / memory / MFU benchmark)

The CPU-side parts of bench/gpu.py (model shape, FLOP and MFU arithmetic, config choice, launch command) are
tested here without a GPU so a GPU run is never their first execution.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, offline_env

from llmops import train
from llmops.config import load_params

sys.path.insert(0, str(ROOT / "bench"))
# bench/ is this repository's own: a repository baked from the template has none, and skips this file
bench_gpu = pytest.importorskip("gpu", reason="bench/gpu.py is not part of this repository")


def shape(size: str) -> dict:
    return dict(bench_gpu.SIZES[size], vocab_size=1024)


@pytest.mark.integration
def test_bench_model_sizes_are_what_they_say():
    from transformers import LlamaConfig, LlamaForCausalLM

    for size, (low, high) in {"0.5b": (0.45e9, 0.6e9), "1b": (0.9e9, 1.1e9)}.items():
        n = bench_gpu.matmul_params(shape(size))
        assert low < n < high, (size, n)
    # the arithmetic matches a real model's weights (meta device: no memory), tied head counted as the LM matmul
    import torch

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**shape("0.5b"), tie_word_embeddings=True))
    weights = sum(p.numel() for name, p in model.named_parameters() if "norm" not in name)
    assert bench_gpu.matmul_params(shape("0.5b")) == weights


def test_lora_flops_and_mfu_arithmetic():
    cfg = {
        "hidden_size": 4,
        "intermediate_size": 8,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "vocab_size": 10,
    }
    n = bench_gpu.matmul_params(cfg)
    assert n == 2 * (2 * 4 * 4 + 2 * 4 * 2 + 3 * 4 * 8) + 4 * 10  # 2 layers of q,o + k,v (GQA) + mlp; lm head
    attn = 4 * 2 * 4 * 100  # 4 * layers * hidden * seq_len
    assert bench_gpu.lora_train_flops_per_token(cfg, 100) == 4 * n + 3 * attn
    assert bench_gpu.lora_train_flops_per_token(cfg, 100, checkpointing=True) == 6 * n + 4 * attn
    assert bench_gpu.mfu(1000.0, 1e9, 1.0) == pytest.approx(1.0)  # 1e12 FLOP/s on a 1 TFLOP/s part
    assert bench_gpu.mfu(1000.0, 1e9, None) is None


def test_peak_lookup_by_torch_device_name():
    assert bench_gpu.peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench_gpu.peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench_gpu.peak_bf16_tflops("NVIDIA H200") == 989.0
    assert bench_gpu.peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench_gpu.peak_bf16_tflops("NVIDIA L4") == 121.0 and bench_gpu.peak_bf16_tflops("NVIDIA L40S") == 362.0
    assert bench_gpu.peak_bf16_tflops("Some Future GPU") is None


def test_bench_runs_what_dvc_runs_with_valid_params(tmp_path, monkeypatch):
    """The bench's params pass the real validation, and its command is the dvc.yaml cmd with single_gpu."""
    cmd = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]["cmd"]
    # the bench starts the launcher directly, not through a shell: dvc.yaml's `exec` has nothing to replace there
    assert " ".join(bench_gpu.train_command()) == cmd.removeprefix("exec ").replace(
        "${train.accelerate_config}", "single_gpu"
    )
    raw = bench_gpu.bench_params(yaml.safe_load((ROOT / "params.yaml").read_text()), tmp_path / "base", 40, 16)
    monkeypatch.chdir(ROOT)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(tmp_path / "params.yaml")
    assert params.train.accelerate_config == "single_gpu" and params.train.precision == "auto"
    assert params.train.max_steps == 40 and params.train.batch_size == 16
    assert (ROOT / "configs/accelerate/single_gpu.yaml").is_file()


@pytest.mark.integration
def test_build_base_writes_a_loadable_bf16_llama(tmp_path, monkeypatch):
    """build_base on CPU with a shrunken shape: tokenizer from the repo's text, config and bf16 weights load."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setitem(
        bench_gpu.SIZES,
        "0.5b",
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2),
    )
    fields = bench_gpu.build_base(ROOT, "0.5b", tmp_path / "base", device="cpu")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "base")
    assert model.config.num_key_value_heads == 2 and model.config.vocab_size == len(tokenizer) == fields["vocab_size"]
    saved = json.loads((tmp_path / "base/config.json").read_text())
    assert (saved.get("dtype") or saved.get("torch_dtype")) == "bfloat16"
    assert tokenizer.chat_template  # prepare renders prompts with it


# --- needs CUDA ------------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_train_bf16_on_gpu(tiny_workdir, in_copy_of):
    work = in_copy_of(tiny_workdir)
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["train"].update(precision="auto", accelerate_config="single_gpu")
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    metrics = train.run(load_params())
    perf = json.loads((work / "reports/train_perf.json").read_text())
    assert metrics["loss_after"] < metrics["loss_before"]
    assert perf["environment"]["gpus"] and perf["peak_gpu_mb"] > 0


@pytest.mark.gpu
def test_launcher_trains_on_single_gpu_config(tiny_workdir, in_copy_of, tmp_path):
    """What dvc.yaml runs with train.accelerate_config=single_gpu: bf16 on the GPU, outputs written."""
    work = in_copy_of(tiny_workdir)
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["train"].update(precision="auto", accelerate_config="single_gpu")
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        bench_gpu.train_command(), cwd=work, env=offline_env(tmp_path), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    perf = json.loads((work / "reports/train_perf.json").read_text())
    assert perf["peak_gpu_mb"] > 0 and perf["tokens_per_s"] > 0
    config = json.loads((work / "models/adapter/adapter_config.json").read_text())
    assert config["r"] == raw["train"]["lora"]["r"]


@pytest.mark.gpu
def test_eval_vllm_matches_hf_on_base(tiny_workdir, in_copy_of):
    """eval.backend vllm scores the same items as hf, and greedy decoding agrees within a couple of items
    (kernels differ, so bf16 ties can break differently)."""
    pytest.importorskip("vllm")
    from llmops import evaluate

    work = in_copy_of(tiny_workdir)
    scores = {}
    for backend in ("hf", "vllm"):
        raw = yaml.safe_load((work / "params.yaml").read_text())
        raw["eval"].update(backend=backend, limit=20)
        (work / "params.yaml").write_text(yaml.safe_dump(raw))
        evaluate.run(load_params(), "base")
        scores[backend] = json.loads((work / "reports/eval_base.json").read_text())
    hf, vl = scores["hf"]["tasks"], scores["vllm"]["tasks"]
    assert hf.keys() == vl.keys()
    for task in hf:
        assert hf[task]["n"] == vl[task]["n"]
        assert abs(hf[task]["score"] - vl[task]["score"]) * hf[task]["n"] <= 2, (task, hf[task], vl[task])
