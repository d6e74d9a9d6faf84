"""GPU: the same train stage with a real small-model architecture at a realistic size, built locally
(a ~0.5B Llama-shaped config with random weights: throughput and memory do not depend on the weights).

Run:  python bench/gpu.py     (prints a "skipped" row on machines without CUDA)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from common import Row, fresh_repo, sh, summarise


def run() -> list[Row]:
    import torch

    if not torch.cuda.is_available():
        print("       gpu | skipped: no CUDA device on this machine", flush=True)
        return [Row("gpu", "skipped: no CUDA device on this machine", float("nan"), float("nan"), float("nan"),
                    "", 0)]
    from transformers import LlamaConfig, LlamaForCausalLM

    repo = fresh_repo()
    try:
        sh(["dvc", "repro", "prepare"], repo)  # tiny tokenizer and prepared data; the model is swapped below
        folder = Path(tempfile.mkdtemp(prefix="gpu-base-"))
        tok_src = repo / "models/base"
        config = LlamaConfig(vocab_size=1024, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                             num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=2048,
                             tie_word_embeddings=True)
        LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            shutil.copy(tok_src / name, folder / name)
        sh(["dvc", "exp", "run", "-S", f"base.model={folder}", "-S", "train.accelerate_config=single_gpu",
            "-S", "train.precision=auto", "train"], repo)
        perf = json.loads((repo / "reports/train_perf.json").read_text())
        return [summarise("gpu", f"train ~0.5B bf16 on {perf['environment']['gpus'][0]}", [perf["tokens_per_s"]],
                          "tok/s"),
                summarise("gpu", "peak GPU memory", [perf["peak_gpu_mb"]], "MB")]
    finally:
        shutil.rmtree(repo, ignore_errors=True)


if __name__ == "__main__":
    run()
