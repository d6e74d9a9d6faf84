"""The model side of our server: one PeftModel serving "base" (adapter disabled) and "tuned", chat template in,
greedy or sampled generation out, with the logprobs and top_logprobs the judge's G-Eval scoring reads.

Used by llmops.serve. Tokenising and generating run under one lock (one model; `disable_adapter()` is not
thread-safe), so requests are served one at a time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

from llmops.serve_api import BASE_ID, DEFAULT_MAX_TOKENS, TUNED_ID, APIError, ChatRequest


class Engine:
    """The loaded model and tokenizer; `chat` turns one validated request into one OpenAI-shaped choice."""

    def __init__(self, model, tokenizer, has_adapter: bool):
        import torch

        self.model, self.tokenizer, self.has_adapter = model, tokenizer, has_adapter
        self.device = next(model.parameters()).device
        self.lock = threading.Lock()
        self.torch = torch
        config = getattr(model, "config", None)
        self.context = getattr(config, "max_position_embeddings", None)
        self.created = int(time.time())

    @property
    def model_ids(self) -> list[str]:
        return [BASE_ID, TUNED_ID] if self.has_adapter else [BASE_ID]

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def _entry(self, token_id: int, logprob: float) -> dict[str, Any]:
        text = self.token_text(token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    def chat(self, req: ChatRequest) -> dict[str, Any]:
        """Tokenise, check against the context, generate. Blocking: call it from a worker thread."""
        with self.lock:  # one request at a time: one model, and disable_adapter() is not thread-safe
            try:
                prompt_ids = self.encode_chat([{"role": m.role, "content": m.content} for m in req.messages])
            except Exception as exc:  # no chat template, a role the template rejects, unencodable text
                raise APIError(
                    400, f"messages: cannot apply the chat template: {exc}", "messages", "invalid_value"
                ) from exc
            n = len(prompt_ids)
            field = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
            asked = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
            if self.context:
                if n >= self.context:
                    raise APIError(
                        400,
                        f"messages: the prompt has {n} tokens; this model's context is {self.context} tokens",
                        "messages",
                        "context_length_exceeded",
                    )
                if asked is not None and asked > self.context:
                    raise APIError(
                        400,
                        f"{field}: {asked} is more than this model's context of {self.context} tokens",
                        field,
                        "invalid_value",
                    )
            max_tokens = DEFAULT_MAX_TOKENS if asked is None else asked
            if self.context:  # never generate past the context: positions beyond it are untrained
                max_tokens = min(max_tokens, self.context - n)
            top = (req.top_logprobs or 0) if req.logprobs else None
            temperature = 1.0 if req.temperature is None else req.temperature
            top_p = 1.0 if req.top_p is None else req.top_p
            result = self._generate(req.model, prompt_ids, max_tokens, temperature, top_p, req.seed, req.stop, top)
        result["prompt_tokens"] = n
        return result

    def _generate(
        self,
        model_id: str,
        prompt_ids: list[int],
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        stop: list[str],
        top_logprobs: int | None,
    ) -> dict[str, Any]:
        torch = self.torch
        sampling = temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_tokens,
            "do_sample": sampling,
            "return_dict_in_generate": True,
            "output_logits": top_logprobs is not None,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if sampling:  # OpenAI semantics: no top-k; top_p and temperature only
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        ids = torch.tensor([prompt_ids], device=self.device)
        with torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)  # the request model keeps it in int64, which torch accepts
            adapter_off = (
                self.model.disable_adapter() if model_id == BASE_ID and self.has_adapter else contextlib.nullcontext()
            )
            with adapter_off:
                out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        new = out.sequences[0, len(prompt_ids) :].tolist()
        eos = self.tokenizer.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        eos_ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos]) - {None}
        finish = "length"
        if eos_ids:
            for i, tok in enumerate(new):
                if tok in eos_ids:  # the end-of-turn token is not part of the answer (OpenAI omits it too)
                    new, finish = new[:i], "stop"
                    break
        # stop strings: cut at the earliest one; keep only tokens wholly before it (their logprobs too)
        pieces = [self.token_text(t) for t in new]
        text = "".join(pieces)
        cut = min((p for p in (text.find(s) for s in stop if s) if p >= 0), default=-1)
        if cut >= 0:
            text, finish, length, keep = text[:cut], "stop", 0, 0
            for piece in pieces:
                if length + len(piece) > cut:
                    break
                length += len(piece)
                keep += 1
            new = new[:keep]
        else:
            text = self.tokenizer.decode(new, skip_special_tokens=True)
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
            "logprobs": None,
        }
        if top_logprobs is not None:
            content = []
            for step, tok in enumerate(new):
                logprobs = torch.log_softmax(out.logits[step][0].float(), dim=-1)
                entry = self._entry(tok, float(logprobs[tok]))
                k = min(top_logprobs, logprobs.shape[-1])
                values, indices = torch.topk(logprobs, k) if k else (torch.tensor([]), torch.tensor([]))
                entry["top_logprobs"] = [self._entry(int(i), float(v)) for v, i in zip(values, indices, strict=True)]
                content.append(entry)
            choice["logprobs"] = {"content": content, "refusal": None}
        return {"choice": choice, "completion_tokens": len(new)}


def load_engine(base_ref: str, revision: str | None, adapter_dir: Path | None) -> Engine:
    import torch

    from llmops.model import load_model, load_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = load_tokenizer((base_ref, revision))
    model = load_model((base_ref, revision), adapter=adapter_dir, device=device)
    model.eval()
    return Engine(model, tokenizer, adapter_dir is not None)
