"""A registered version as an MLflow pyfunc model: what `mlflow models serve -m models:/<name>@<alias>` loads.

Run:  MLFLOW_TRACKING_URI=<store> mlflow models serve -m models:/<name>@production --env-manager local -p 5001
      curl -X POST localhost:5001/invocations -H 'Content-Type: application/json' \\
           -d '{"dataframe_records": [{"prompt": "<an input of your domain>", "max_new_tokens": 32}]}'

llmops.registry copies this file into every version as code/llmops_pyfunc.py and writes the version's MLmodel
(flavor python_function, loader_module llmops_pyfunc, the version folder itself as its data), so it imports nothing
from llmops: a serving host needs torch, transformers and peft (the version's requirements.txt), not this repo.
Input: rows with `prompt` (one user turn) or `messages` (a chat), optionally `max_new_tokens` (default 64; a row
field, since the version declares no signature for MLflow's `params`); output: one generated answer per row,
greedy, through the base's own chat template, the adapter applied unmerged (as the gate evaluated it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MANIFEST = "llmops_model.json"
DEFAULT_MAX_NEW_TOKENS = 64


def _load_pyfunc(data_path: str) -> ChatModel:
    """MLflow's entry point for a loader_module model: the folder holding the version."""
    return ChatModel(Path(data_path))


def rows(model_input: Any) -> list[dict[str, Any]]:
    """What /invocations hands over (a DataFrame from dataframe_records/split, a list or a dict) as rows."""
    if hasattr(model_input, "to_dict"):
        return model_input.to_dict(orient="records")
    if isinstance(model_input, dict):
        return [model_input]
    if isinstance(model_input, str):
        return [{"prompt": model_input}]
    return [r if isinstance(r, dict) else {"prompt": r} for r in model_input]


class ChatModel:
    def __init__(self, root: Path):
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        base = manifest["base"]
        if base["source"] == "hub":  # pinned by id and revision: the serving host's hub or cache provides it
            ref, revision = base["id"], base.get("revision")
        else:  # bundled: the base's weights travel inside the version
            ref, revision = str(root / base["dir"]), None
        self.tokenizer = AutoTokenizer.from_pretrained(ref, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(ref, revision=revision, dtype="auto")
        self.model = PeftModel.from_pretrained(model, str(root / manifest["adapter"]["dir"])).eval()

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> list[str]:
        import torch

        default = int((params or {}).get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        answers = []
        for row in rows(model_input):
            messages = row.get("messages")  # a DataFrame mixing both kinds fills the missing one with NaN
            if not isinstance(messages, (list, tuple)) or not messages:
                messages = [{"role": "user", "content": str(row["prompt"])}]
            prompt = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
            ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            limit = row.get("max_new_tokens")
            limit = default if limit is None or limit != limit else int(limit)  # a DataFrame fills gaps with NaN
            with torch.inference_mode():
                out = self.model.generate(**ids, max_new_tokens=limit, do_sample=False, pad_token_id=pad)
            answers.append(self.tokenizer.decode(out[0, ids.input_ids.shape[1] :], skip_special_tokens=True))
        return answers
