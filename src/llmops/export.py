"""`llmops export`: the gated adapter merged into its base, as a plain Hugging Face folder, checked before it is kept.

Run:  llmops export      (writes paths.merged_dir; `llmops deploy` runs it when deploy.merged is true)

The folder (safetensors weights, config, tokenizer with its chat template, llmops_merged.json naming the base and
the adapter sha256) is the form vLLM (`vllm serve <folder>`), TGI and the GGUF converters take. Merging changes the
arithmetic (W + BA once, instead of x@W + x@A@B each call) and, in bf16 or on a quantized base, can change answers:
the merged folder is run through the deploy check (llmops.deploy_check) against the answers eval_tuned recorded for
the adapter, and is removed again, with the reasons, if it fails.
"""

from __future__ import annotations

from typing import Any

from llmops.artifacts import atomic_dir, sha256_tree, write_json
from llmops.config import Params
from llmops.errors import StageError

MERGED_MANIFEST = "llmops_merged.json"


def merge(params: Params) -> None:
    """Write base + adapter, merged, into paths.merged_dir (atomically: a failed merge leaves no folder)."""
    from llmops.model import identity, load_model, load_tokenizer

    paths = params.paths
    if not paths.adapter_dir.is_dir():
        raise StageError(f"{paths.adapter_dir}: adapter folder missing; run the train stage first (dvc repro train)")
    merged = load_model(paths, adapter=paths.adapter_dir).merge_and_unload()  # the base's own dtype
    with atomic_dir(paths.merged_dir) as out:
        merged.save_pretrained(out)  # safetensors
        load_tokenizer(paths).save_pretrained(out)  # with the chat template
        write_json(
            out / MERGED_MANIFEST,
            {"adapter_sha256": sha256_tree(paths.adapter_dir), "base": identity(paths), "merged_by": "peft"},
        )


def run(params: Params) -> dict[str, Any]:
    """Merge, then check the merged folder item by item; StageError (folder removed) when it fails."""
    import shutil

    from llmops import deploy_check

    merge(params)
    result = deploy_check.run(params, [("merged", params.paths.merged_dir, None)])
    if not result.passed:
        shutil.rmtree(params.paths.merged_dir, ignore_errors=True)
        raise StageError(
            f"the merged export answers differently from the evaluated adapter ({deploy_check.failure(result)}); "
            f"removed {params.paths.merged_dir}; serve the adapter form instead"
        )
    return {"merged_dir": str(params.paths.merged_dir), "check": deploy_check.summary(result)}
