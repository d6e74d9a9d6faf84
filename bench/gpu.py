"""GPU: the train stage at a realistic size, launched as dvc.yaml launches it, plus the eval stage on hf vs vLLM.

Run:  python bench/gpu.py [--size 0.5b|1b] [--steps 40]     (one row "skipped" on machines without CUDA)

The base is a Llama-shaped config (0.5B: 1536 wide, 20 layers, GQA 12/4 heads; 1B: TinyLlama's shape) with random
bf16 weights and the repo's own tokenizer, built locally (no hub): throughput and memory do not depend on the
weights. It trains through `llmops train-launch --config_file configs/accelerate/single_gpu.yaml` (precision auto =
bf16) and reports tokens/s, peak GPU memory and MFU against the GPU's dense bf16 peak; then `llmops eval-base` runs
with eval.backend hf and vllm (vllm needs `pip install -e .[vllm]`; without it that row says skipped).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import yaml
from common import Row, fresh_repo, sh, summarise

# Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, from the vendors' data sheets; first matching key wins.
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}

SIZES = {  # LlamaConfig fields; the vocabulary is the repo tokenizer's (~1k), so the size is in the layers
    "0.5b": dict(
        hidden_size=1536, intermediate_size=4096, num_hidden_layers=20, num_attention_heads=12, num_key_value_heads=4
    ),
    "1b": dict(
        hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4
    ),
}
ACCELERATE_CONFIG = "single_gpu"


def peak_bf16_tflops(device_name: str) -> float | None:
    """The bf16 peak of a CUDA device by its torch name (e.g. 'NVIDIA H100 80GB HBM3'); None if unknown."""
    for key, peak in PEAK_BF16_TFLOPS.items():
        if key.lower() in device_name.lower():
            return peak
    return None


def matmul_params(cfg: dict) -> int:
    """Weights that take part in a matmul per token: attention, MLP and the LM head (the embedding is a lookup)."""
    d, layers, ff = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]
    head_dim = d // cfg["num_attention_heads"]
    q_o = 2 * d * cfg["num_attention_heads"] * head_dim
    k_v = 2 * d * cfg["num_key_value_heads"] * head_dim
    return layers * (q_o + k_v + 3 * d * ff) + d * cfg["vocab_size"]


def lora_train_flops_per_token(cfg: dict, seq_len: float, checkpointing: bool = False) -> float:
    """FLOPs per trained token with a frozen base: forward 2N + attention 4*L*d*T; backward needs activation
    gradients only (2N, attention 8*L*d*T), not weight gradients (the LoRA matrices are negligible);
    activation checkpointing repeats the forward. (Full fine-tuning would be the familiar 6N + 12*L*d*T.)"""
    n = matmul_params(cfg)
    attn_fwd = 4 * cfg["num_hidden_layers"] * cfg["hidden_size"] * seq_len
    fwd = 2 * n + attn_fwd
    bwd = 2 * n + 2 * attn_fwd
    return fwd + bwd + (fwd if checkpointing else 0)


def mfu(tokens_per_s: float, flops_per_token: float, peak_tflops: float | None) -> float | None:
    return None if not peak_tflops else tokens_per_s * flops_per_token / (peak_tflops * 1e12)


def train_command() -> list[str]:
    """Exactly what the dvc.yaml train stage runs with train.accelerate_config=single_gpu."""
    return ["llmops", "train-launch", "--config_file", f"configs/accelerate/{ACCELERATE_CONFIG}.yaml"]


def bench_params(raw: dict, base_dir: Path, steps: int, batch_size: int) -> dict:
    """params.yaml for the run: the built base, the single-GPU launcher, bf16 where supported, a step budget."""
    raw["base"]["model"] = str(base_dir)
    raw["train"].update(accelerate_config=ACCELERATE_CONFIG, precision="auto", max_steps=steps, batch_size=batch_size)
    return raw


def build_base(repo: Path, size: str, dest: Path, device: str = "cuda") -> dict:
    """Random-init bf16 Llama of `size` with the repo's tokenizer, saved to `dest`; returns its config fields."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmops.base import build_tokenizer, read_texts

    raw = yaml.safe_load((repo / "params.yaml").read_text())
    texts = read_texts(repo / raw["paths"]["general_text"]) + read_texts(repo / raw["paths"]["domain_text"])
    tokenizer = build_tokenizer(texts, raw["base"]["tiny"]["vocab_size"])
    fields = dict(
        SIZES[size],
        vocab_size=len(tokenizer),
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(device):  # built on the GPU: a 1B init on CPU takes minutes
        model = LlamaForCausalLM(LlamaConfig(**fields)).to(torch.bfloat16)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    del model
    torch.cuda.empty_cache()
    return fields


def run(size: str = "0.5b", steps: int = 40, batch_size: int = 16) -> list[Row]:
    import torch

    if not torch.cuda.is_available():
        print("       gpu | skipped: no CUDA device on this machine", flush=True)
        return [Row("gpu", "skipped: no CUDA device on this machine", float("nan"), float("nan"), float("nan"), "", 0)]
    repo = fresh_repo("gpu-")
    try:
        return measure(repo, size, steps, batch_size)
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def measure(repo: Path, size: str, steps: int, batch_size: int) -> list[Row]:
    import torch

    base_dir = repo / "gpu-base"
    fields = build_base(repo, size, base_dir)
    raw = bench_params(yaml.safe_load((repo / "params.yaml").read_text()), base_dir, steps, batch_size)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    sh(["llmops", "base"], repo)
    sh(["llmops", "prepare"], repo)
    sh(train_command(), repo)
    perf = json.loads((repo / "reports/train_perf.json").read_text())
    metrics = json.loads((repo / "reports/train.json").read_text())
    device = torch.cuda.get_device_name(0)
    seq_len = metrics["tokens_seen"] / (metrics["steps"] * batch_size)  # mean non-padding tokens per sequence
    fpt = lora_train_flops_per_token(fields, seq_len, raw["train"]["gradient_checkpointing"])
    peak = peak_bf16_tflops(device)
    util = mfu(perf["tokens_per_s"], fpt, peak)
    rows = [
        summarise(
            "gpu",
            f"train {size} bf16 ({matmul_params(fields) / 1e9:.2f}B matmul params) on {device}",
            [perf["tokens_per_s"]],
            "tok/s",
        ),
        summarise("gpu", "peak GPU memory", [perf["peak_gpu_mb"]], "MB"),
        summarise(
            "gpu",
            f"MFU vs {peak} TFLOP/s bf16 peak" if peak else "MFU (unknown GPU peak)",
            [util if util is not None else float("nan")],
            "ratio",
        ),
        summarise("gpu", "fixed cost (process - loop)", [perf["phases_s"]["process"] - perf["runtime_s"]], "s"),
    ]
    for backend in ("hf", "vllm"):
        if backend == "vllm":
            try:
                import vllm  # noqa: F401
            except ImportError:
                print("       gpu | eval vllm skipped: vllm not installed (pip install -e .[vllm])", flush=True)
                continue
        raw["eval"]["backend"] = backend
        (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        start = time.perf_counter()
        sh(["llmops", "eval-base"], repo)
        rows.append(summarise("gpu", f"eval-base wall, backend {backend}", [time.perf_counter() - start], "s"))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="0.5b")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    opts = parser.parse_args()
    run(opts.size, opts.steps, opts.batch_size)
