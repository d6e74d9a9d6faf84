"""Stage `prepare`: validate and normalise the raw labelled data into what training and evaluation read.

Run:  llmops prepare       (dvc repro prepare)

Accepted records, one JSON object per line (both may be mixed in one file):
  {"input": "...", "output": "..."}
  {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ..., {"role": "assistant", ...}]}
The answer must contain the domain label in the form `prepare.label_regex` captures ("Category: <label>").

Checks (each failure names file, line and field, exits non-zero and writes nothing): UTF-8, JSON, shape,
empty strings, label present, duplicates (dropped and counted), train/eval leakage (exact or
whitespace/case-normalised; an error unless prepare.allow_leakage), length in tokens against
prepare.max_seq_len with the policy prepare.truncation, and at least prepare.min_examples training records.

Writes paths.prepared_dir/{train,eval}.jsonl and reports/data.json (counts, drops, token percentiles).
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmops.artifacts import atomic_dir, write_json, write_jsonl
from llmops.base import load_tokenizer
from llmops.config import Params
from llmops.errors import DataError, StageError

ROLES = {"system", "user", "assistant"}


@dataclass
class Example:
    path: Path
    line: int
    messages: list[dict[str, str]]  # prompt turns followed by exactly one final assistant turn
    label: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> list[dict[str, str]]:
        return self.messages[:-1]

    @property
    def answer(self) -> str:
        return self.messages[-1]["content"]

    @property
    def key(self) -> str:
        """Whitespace/case-normalised prompt: what duplicate and leakage checks compare."""
        return " ".join(" ".join(m["content"] for m in self.prompt if m["role"] != "system").lower().split())


def _text(value: Any, path: Path, line: int, name: str) -> str:
    if not isinstance(value, str):
        raise DataError(path, f"must be a string, got {type(value).__name__}", line, name)
    if not value.strip():
        raise DataError(path, "is empty", line, name)
    return value


def parse_record(record: Any, path: Path, line: int, system_prompt: str | None) -> Example:
    if not isinstance(record, dict):
        raise DataError(path, f"expected a JSON object, got {type(record).__name__}", line)
    if "messages" in record:
        turns = record["messages"]
        if not isinstance(turns, list) or not turns:
            raise DataError(path, "must be a non-empty list of {role, content}", line, "messages")
        messages = []
        for i, turn in enumerate(turns):
            where = f"messages[{i}]"
            if not isinstance(turn, dict):
                raise DataError(path, "must be an object with role and content", line, where)
            role = turn.get("role")
            if role not in ROLES:
                raise DataError(path, f"must be one of {sorted(ROLES)}, got {role!r}", line, f"{where}.role")
            messages.append({"role": role, "content": _text(turn.get("content"), path, line, f"{where}.content")})
        if messages[-1]["role"] != "assistant":
            raise DataError(path, "the last turn must be the assistant's answer", line, f"messages[{len(turns) - 1}].role")
        if not any(m["role"] == "user" for m in messages[:-1]):
            raise DataError(path, "needs at least one user turn before the answer", line, "messages")
    elif "input" in record or "output" in record:
        for name in ("input", "output"):
            if name not in record:
                raise DataError(path, "missing", line, name)
        messages = [{"role": "user", "content": _text(record["input"], path, line, "input")},
                    {"role": "assistant", "content": _text(record["output"], path, line, "output")}]
    else:
        raise DataError(path, "record needs either 'messages' or 'input'+'output'", line)
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return Example(path, line, messages)


def read_examples(path: Path, system_prompt: str | None, label_regex: re.Pattern[str]) -> list[Example]:
    if not path.is_file():
        raise DataError(path, "file not found")
    examples = []
    with open(path, "rb") as fh:
        for line, raw in enumerate(fh, 1):
            if not raw.strip():
                raise DataError(path, "blank line", line)
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise DataError(path, f"not valid UTF-8 ({exc.reason} at byte {exc.start})", line) from None
            except json.JSONDecodeError as exc:
                raise DataError(path, f"malformed JSON ({exc.msg}, column {exc.colno})", line) from None
            example = parse_record(record, path, line, system_prompt)
            match = label_regex.search(example.answer)
            if not match:
                field_name = "output" if "output" in record else f"messages[{len(record['messages']) - 1}].content"
                raise DataError(path, f"answer has no label matching {label_regex.pattern!r}", line, field_name)
            example.label = match.group(1)
            examples.append(example)
    if not examples:
        raise DataError(path, "no records (the file is empty)")
    return examples


def dedupe(examples: list[Example]) -> tuple[list[Example], int]:
    seen: set[str] = set()
    kept = []
    for ex in examples:
        if ex.key not in seen:
            seen.add(ex.key)
            kept.append(ex)
    return kept, len(examples) - len(kept)


def percentiles(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values)
    return {"p50": float(np.percentile(arr, 50)), "p90": float(np.percentile(arr, 90)),
            "p99": float(np.percentile(arr, 99)), "max": int(arr.max()), "mean": round(float(arr.mean()), 2)}


def token_lengths(tokenizer, ex: Example) -> tuple[int, int]:
    prompt = tokenizer.apply_chat_template(ex.prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(ex.messages, tokenize=False)
    return len(tokenizer(prompt, add_special_tokens=False)["input_ids"]), len(tokenizer(full, add_special_tokens=False)["input_ids"])


def apply_length_policy(examples: list[Example], tokenizer, max_len: int, policy: str) -> tuple[list[Example], dict]:
    kept, dropped, truncated, lengths = [], 0, 0, []
    for ex in examples:
        prompt_len, full_len = token_lengths(tokenizer, ex)
        if full_len > max_len:
            if policy == "error" or (policy == "truncate" and prompt_len >= max_len):
                raise DataError(ex.path, f"{full_len} tokens (prompt {prompt_len}) exceed prepare.max_seq_len "
                                f"{max_len} (prepare.truncation: {policy})", ex.line)
            if policy == "drop":
                dropped += 1
                continue
            # truncate: keep the prompt whole and cut the answer's tail, so the label (first) survives
            ids = tokenizer(ex.answer, add_special_tokens=False)["input_ids"]
            ex.messages[-1] = {"role": "assistant", "content": tokenizer.decode(ids[: max(1, len(ids) - (full_len - max_len))])}
            truncated += 1
            full_len = max_len
        lengths.append(full_len)
        kept.append(ex)
    return kept, {"dropped_too_long": dropped, "truncated": truncated, "tokens": percentiles(lengths)}


def run(params: Params) -> dict[str, Any]:
    """Validate both raw files, then write prepared train/eval and reports/data.json together."""
    start = time.perf_counter()
    paths, cfg = params.paths, params.prepare
    system_prompt = cfg.system_prompt.read_text(encoding="utf-8").strip() if cfg.system_prompt else None
    label_regex = re.compile(cfg.label_regex)
    train_raw = read_examples(paths.raw_train, system_prompt, label_regex)
    eval_raw = read_examples(paths.raw_eval, system_prompt, label_regex)
    train, train_dupes = dedupe(train_raw)
    evals, eval_dupes = dedupe(eval_raw)

    eval_keys = {ex.key: ex for ex in evals}
    leaked = [ex for ex in train if ex.key in eval_keys]
    if leaked and not cfg.allow_leakage:
        first = leaked[0]
        raise DataError(first.path, f"input also appears in {paths.raw_eval} line {eval_keys[first.key].line} "
                        f"({len(leaked)} leaked example(s) in total; set prepare.allow_leakage to accept)",
                        first.line, "input")

    tokenizer = load_tokenizer(paths)
    train, train_len = apply_length_policy(train, tokenizer, cfg.max_seq_len, cfg.truncation)
    evals, eval_len = apply_length_policy(evals, tokenizer, cfg.max_seq_len, cfg.truncation)
    if len(train) < cfg.min_examples:
        raise DataError(paths.raw_train, f"{len(train)} usable training examples after dropping duplicates and "
                        f"over-long ones; prepare.min_examples is {cfg.min_examples}")
    labels = sorted({ex.label for ex in train})
    unseen = sorted({ex.label for ex in evals} - set(labels))
    if unseen:
        raise DataError(paths.raw_eval, f"labels {unseen} never occur in training data")

    random.Random(cfg.seed).shuffle(train)
    train_rows = [{"messages": ex.messages, "label": ex.label} for ex in train]
    eval_rows = [{
        "id": i, "source_line": ex.line, "messages": ex.prompt, "reference": ex.answer, "label": ex.label,
        "gold": labels.index(ex.label), "choices": labels,
        # rendered once here with the base tokenizer's chat template, so lm-eval and the judge see one prompt
        "prompt": tokenizer.apply_chat_template(ex.prompt, tokenize=False, add_generation_prompt=True),
    } for i, ex in enumerate(evals)]

    stats = {
        "train": {"raw": len(train_raw), "duplicates_dropped": train_dupes, "final": len(train), **train_len,
                  "labels": {label: sum(ex.label == label for ex in train) for label in labels}},
        "eval": {"raw": len(eval_raw), "duplicates_dropped": eval_dupes, "final": len(evals), **eval_len,
                 "labels": {label: sum(ex.label == label for ex in evals) for label in labels}},
        "leaked": len(leaked),
        "labels": labels,
        "truncation_policy": cfg.truncation,
        "max_seq_len": cfg.max_seq_len,
    }
    with atomic_dir(paths.prepared_dir) as out:
        write_jsonl(out / paths.prepared_train.name, train_rows)
        write_jsonl(out / paths.prepared_eval.name, eval_rows)
        write_json(paths.report("data.json"), stats)  # inside the block: no data.json without the data
    stats["runtime_s"] = round(time.perf_counter() - start, 2)
    return stats
