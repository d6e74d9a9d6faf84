"""Stage `base`: resolve the base model named in params.yaml and record exactly which one it is.

Run:  llmops base          (dvc repro base)

- base.model == "tiny": build a ~0.2M-parameter Llama-architecture model and a byte-level BPE tokenizer
  (with a chat template) from the shipped text, then pretrain it briefly on the general + unlabelled
  domain corpus, so it has general recall to lose and domain vocabulary for LoRA to build on.
- a GGUF file (a path ending in .gguf, or a short name of one a package ships, e.g. smollm2-135m-instruct):
  dequantized once into a plain Hugging Face folder here (llmops.gguf_convert), pinned by the sha256 of every
  file it wrote, of the source file, and the converter's library versions.
- anything else: a hub id or a local folder. Nothing is copied; the identity (where, which commit, a hash
  of its config) is pinned in identity.json so every later result names the exact base it came from.

Either way `paths.base_dir/identity.json` is the stage's contract; llmops.model loads the base from it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from llmops.artifacts import atomic_dir, read_jsonl, sha256_file, write_json
from llmops.config import Base, Params, Paths, TinyModel
from llmops.errors import DataError, StageError
from llmops.gguf_convert import is_gguf
from llmops.model import manifest
from llmops.progress import Every

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
# Turns end with <|end|>, which is also EOS: generation stops after one assistant turn.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def read_texts(path: Path) -> list[str]:
    """Unlabelled corpus: JSONL of {"text": ...}; every line checked, errors name the line."""
    texts = []
    for lineno, record in read_jsonl(path):
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataError(path, "missing or empty string", lineno, "text")
        texts.append(text)
    return texts


def build_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )


def pretrain(model, tokenizer, texts: list[str], cfg: TinyModel, seed: int) -> dict[str, float]:
    """Causal-LM pretraining on random windows of the concatenated corpus (seeded, so repeatable)."""
    import torch

    stream = []
    for text in texts:
        stream += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    data = torch.tensor(stream)
    if len(data) <= cfg.seq_len + 1:
        raise StageError(f"pretraining corpus has {len(data)} tokens, fewer than seq_len {cfg.seq_len}")
    gen = torch.Generator().manual_seed(seed)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    warmup = max(1, cfg.pretrain_steps // 20)

    def lr_at(step: int) -> float:  # linear warmup, cosine decay: the usual recipe, no extra knobs
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, cfg.pretrain_steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_at)
    model.train()
    losses = []
    tick = Every("base: pretraining step", cfg.pretrain_steps)  # a line every 30 s: minutes of silence look hung
    for step in range(cfg.pretrain_steps):
        starts = torch.randint(0, len(data) - cfg.seq_len, (cfg.batch_size,), generator=gen)
        batch = torch.stack([data[s : s + cfg.seq_len] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        losses.append(loss.item())
        tick(step + 1, f"loss {losses[-1]:.3f}")
    model.eval()
    tail = losses[-20:] or [float("nan")]
    return {
        "pretrain_loss_first": losses[0] if losses else None,
        "pretrain_loss_final": sum(tail) / len(tail),
        "corpus_tokens": len(data),
    }


def build_tiny(paths: Paths, cfg: Base, out: Path) -> dict[str, Any]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    general, domain = read_texts(paths.general_text), read_texts(paths.domain_text)
    tokenizer = build_tokenizer(general + domain, cfg.tiny.vocab_size)
    texts = general * cfg.tiny.general_weight + domain
    t = cfg.tiny
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=t.hidden_size,
        intermediate_size=t.intermediate_size,
        num_hidden_layers=t.num_layers,
        num_attention_heads=t.num_heads,
        num_key_value_heads=t.num_heads,
        max_position_embeddings=t.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    stats = pretrain(model, tokenizer, texts, t, cfg.seed)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    stats["parameters"] = sum(p.numel() for p in model.parameters())
    return {
        "model": "tiny",
        "source": "built",
        "path": str(paths.base_dir),
        "revision": None,
        "config_sha256": sha256_file(out / "config.json"),
        "weights_sha256": sha256_file(out / "model.safetensors"),
        **stats,
    }


def resolve_external(cfg: Base) -> dict[str, Any]:
    """Pin a hub id or local folder without copying weights (GPU runners keep their own HF cache)."""
    local = Path(cfg.model).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise StageError(f"base.model {cfg.model!r}: folder has no config.json")
        files = manifest(local)
        return {
            "model": cfg.model,
            "source": "local",
            "path": str(local.resolve()),
            "revision": cfg.revision,
            "config_sha256": sha256_file(local / "config.json"),
            "files": files,
            "weights_sha256": hashlib.sha256(
                json.dumps({k: v["sha256"] for k, v in files.items()}, sort_keys=True).encode()
            ).hexdigest(),
        }
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}
    try:  # only small metadata files: the weights are loaded by the stages that need them
        snapshot = Path(
            snapshot_download(
                cfg.model,
                revision=cfg.revision,
                local_files_only=offline,
                allow_patterns=["config.json", "generation_config.json"],
            )
        )
    except Exception as exc:  # noqa: BLE001 - hub errors vary by version; the message is what the user needs
        raise StageError(f"base.model {cfg.model!r} (revision {cfg.revision}): cannot resolve: {exc}") from None
    return {
        "model": cfg.model,
        "source": "hub",
        "path": cfg.model,
        "revision": snapshot.name,
        "config_sha256": sha256_file(snapshot / "config.json"),
    }


def build_from_gguf(paths: Paths, cfg: Base, out: Path) -> dict[str, Any]:
    from llmops import gguf_convert

    identity = gguf_convert.convert(cfg.model, out)
    files = manifest(out)
    return {
        **identity,
        "path": str(paths.base_dir),
        "revision": None,
        "config_sha256": files["config.json"]["sha256"],
        "files": files,
        "weights_sha256": files["model.safetensors"]["sha256"],
    }


def run(params: Params) -> dict[str, Any]:
    """Build or resolve the base model; write paths.base_dir (with identity.json) and reports/base.json."""
    start = time.perf_counter()
    paths, cfg = params.paths, params.base
    with atomic_dir(paths.base_dir) as out:
        if cfg.model == "tiny":
            identity = build_tiny(paths, cfg, out)
        elif is_gguf(cfg.model):
            identity = build_from_gguf(paths, cfg, out)
        else:
            identity = resolve_external(cfg)
        write_json(out / "identity.json", identity)
    metrics = {k: identity[k] for k in ("parameters", "pretrain_loss_first", "pretrain_loss_final") if k in identity}
    metrics["runtime_s"] = round(time.perf_counter() - start, 2)
    write_json(paths.report("base.json"), metrics)
    return metrics
