r"""Stage `prepare`: validate and normalise the raw labelled data into what training and evaluation read.

Run:  llmops prepare       (dvc repro prepare)

Accepted records, one JSON object per line (both shapes may be mixed in one file, never in one record):
  {"input": "...", "output": "..."}
  {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ..., {"role": "assistant", ...}]}
The answer must contain the domain label in the form `prepare.label_regex` captures ("Category: <label>"),
and the label must be one of `prepare.labels` (null: an open set, whatever the training data holds).

Checks (each failure names file, line and field, exits non-zero and writes nothing): line size against
prepare.max_line_bytes (before parsing or tokenising; an over-long line is never held in memory whole), UTF-8,
JSON, duplicate keys at any level (json would silently keep the last), shape (one per record), control characters (a JSON escape
such as \u0000 included; \n and \t allowed), text with nothing visible (whitespace, zero-width or format
characters only), label present and in prepare.labels, eval labels that training lacks, duplicates (dropped and counted), train/eval leakage (an error unless
prepare.allow_leakage; see `find_leaks`), length in tokens against prepare.max_seq_len with the policy
prepare.truncation, and at least prepare.min_examples training records.

Writes paths.prepared_dir/{train,eval}.jsonl and reports/data.json (counts, drops, token percentiles).

Why one module (~380 lines): the checks raw data must pass, in the order they run; the record shapes are
llmops.records, the chat rendering llmops.model.
"""

from __future__ import annotations

import random
import re
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from llmops import schemas
from llmops.artifacts import atomic_dir, parse_json_line, write_jsonl
from llmops.config import Params
from llmops.errors import DataError, field_path, problem
from llmops.model import chat_texts, load_tokenizer
from llmops.records import ChatRecord, PairRecord


@dataclass
class Example:
    path: Path
    line: int
    messages: list[dict[str, str]]  # prompt turns followed by exactly one final assistant turn
    label: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    prompt_field: str = "input"  # where the prompt sits in the raw record, for messages that point at it
    answer_field: str = "output"  # where the answer (and its label) sits in the raw record

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

    @property
    def words(self) -> list[str]:
        return normalised_words(" ".join(m["content"] for m in self.prompt if m["role"] != "system"))


def normalised_words(text: str) -> list[str]:
    r"""NFKC, case-folded words with punctuation, symbols and whitespace as separators and format characters
    (zero-width) dropped: 'Site A-1, OFF\u200bair!' and 'site a 1 off air' give the same words."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(
        "" if unicodedata.category(c) == "Cf" else " " if unicodedata.category(c)[0] in "PSZC" else c for c in text
    ).split()


def _ending(raw: bytes) -> int:
    return 2 if raw.endswith(b"\r\n") else 1 if raw.endswith(b"\n") else 0


def _bounded_lines(fh, limit: int):
    """(line number, bytes or None, size in bytes without the line ending): a line over `limit` bytes comes back
    as None after being skipped in 1 MiB chunks, so a huge line costs one chunk of memory, not its size."""
    number = 0
    while raw := fh.readline(limit + 2):  # room for the limit and "\r\n"
        number += 1
        if raw.endswith(b"\n") or len(raw) < limit + 2:  # the whole line (or the file's unterminated last one)
            size = len(raw) - _ending(raw)
            yield number, raw if size <= limit else None, size
            continue
        size, tail = len(raw), raw[-1:]
        while chunk := fh.readline(1 << 20):
            size, tail = size + len(chunk), (tail + chunk)[-2:]
            if chunk.endswith(b"\n"):
                break
        yield number, None, size - _ending(tail)


def parse_record(record: Any, path: Path, line: int, system_prompt: str | None) -> Example:
    """One parsed JSON line as an Example (llmops.records validates its shape); DataError naming the field."""
    if not isinstance(record, dict):
        raise DataError(path, f"expected a JSON object, got {type(record).__name__}", line)
    if "messages" in record and ("input" in record or "output" in record):
        raise DataError(
            path, "holds both shapes ('messages' and 'input'/'output'); keep one, so no answer is dropped", line
        )
    if "messages" not in record and "input" not in record and "output" not in record:
        raise DataError(path, "record needs either 'messages' or 'input'+'output'", line)
    try:
        parsed = (ChatRecord if "messages" in record else PairRecord).model_validate(record)
    except ValidationError as exc:
        first = exc.errors()[0]  # the first problem, named: a person fixes one field at a time
        raise DataError(path, problem(first), line, field_path(first["loc"])) from None
    if isinstance(parsed, PairRecord):
        messages = [{"role": "user", "content": parsed.input}, {"role": "assistant", "content": parsed.output}]
        example = Example(path, line, messages)
    else:
        messages = [{"role": t.role, "content": t.content} for t in parsed.messages]
        last = len(messages) - 1
        if messages[-1]["role"] != "assistant":
            raise DataError(path, "the last turn must be the assistant's answer", line, f"messages[{last}].role")
        if not any(m["role"] == "user" for m in messages[:-1]):
            raise DataError(path, "needs at least one user turn before the answer", line, "messages")
        example = Example(path, line, messages, prompt_field="messages", answer_field=f"messages[{last}].content")
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return example


def read_examples(
    path: Path,
    system_prompt: str | None,
    label_regex: re.Pattern[str],
    max_line_bytes: int = 1 << 20,
    labels: list[str] | None = None,
) -> list[Example]:
    """Parse and check every line; `labels` (prepare.labels) closes the label set, None leaves it open."""
    if not path.is_file():
        raise DataError(path, "file not found")
    examples = []
    with open(path, "rb") as fh:
        for line, raw, size in _bounded_lines(fh, max_line_bytes):
            if raw is None:
                raise DataError(
                    path,
                    f"line is {size:,} bytes, over prepare.max_line_bytes {max_line_bytes:,} "
                    "(rejected before parsing or tokenising)",
                    line,
                )
            if not raw.strip():
                raise DataError(path, "blank line", line)
            record = parse_json_line(raw, path, line)
            example = parse_record(record, path, line, system_prompt)
            match = label_regex.search(example.answer)
            if not match:
                raise DataError(
                    path, f"answer has no label matching {label_regex.pattern!r}", line, example.answer_field
                )
            example.label = match.group(1)
            if labels is not None and example.label not in labels:
                raise DataError(
                    path,
                    f"label {example.label!r} is not in prepare.labels {labels} "
                    "(add it there, or set prepare.labels: null for an open label set)",
                    line,
                    example.answer_field,
                )
            examples.append(example)
    if not examples:
        raise DataError(path, "no records (the file is empty)")
    return examples


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    if len(words) < n:  # a text shorter than n words is one gram, so short copies still match exactly
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def find_leaks(
    train: list[Example], evals: list[Example], n: int, threshold: float
) -> tuple[list[tuple[Example, Example, float]], tuple[Example, Example, float] | None]:
    """Every (train, eval, similarity) pair at or above `threshold`, plus the most similar pair overall.

    Similarity is the Jaccard index of the prompts' word n-gram sets after `normalised_words`, so a copy with
    changed case, punctuation, spacing or Unicode form scores 1.0 and a lightly edited copy stays high. An
    inverted index over the eval n-grams only scores pairs that share at least one n-gram.
    """
    eval_grams = [_ngrams(ex.words, n) for ex in evals]
    index: dict[tuple[str, ...], list[int]] = {}
    for j, grams in enumerate(eval_grams):
        for gram in grams:
            index.setdefault(gram, []).append(j)
    leaks, best = [], None
    for ex in train:
        grams = _ngrams(ex.words, n)
        shared = Counter(j for gram in grams for j in index.get(gram, ()))
        for j, common in sorted(shared.items()):
            similarity = common / (len(grams) + len(eval_grams[j]) - common)
            if best is None or similarity > best[2]:
                best = (ex, evals[j], similarity)
            if similarity >= threshold:
                leaks.append((ex, evals[j], similarity))
    return leaks, best


def _pair(train: Example, evals: Example, similarity: float) -> dict[str, Any]:
    return {
        "train": f"{train.path}:{train.line}",
        "eval": f"{evals.path}:{evals.line}",
        "similarity": round(similarity, 4),
    }


def dedupe(examples: list[Example]) -> tuple[list[Example], int]:
    seen: set[str] = set()
    kept = []
    for ex in examples:
        if ex.key not in seen:
            seen.add(ex.key)
            kept.append(ex)
    return kept, len(examples) - len(kept)


def percentiles(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    arr = np.asarray(values)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p90": float(np.percentile(arr, 90)),
        "p99": float(np.percentile(arr, 99)),
        "max": int(arr.max()),
        "mean": round(float(arr.mean()), 2),
    }


def token_lengths(tokenizer, ex: Example) -> tuple[int, int]:
    prompt, full = chat_texts(tokenizer, ex.messages)
    return len(tokenizer(prompt, add_special_tokens=False)["input_ids"]), len(
        tokenizer(full, add_special_tokens=False)["input_ids"]
    )


def apply_length_policy(examples: list[Example], tokenizer, max_len: int, policy: str) -> tuple[list[Example], dict]:
    kept, dropped, truncated, lengths = [], 0, 0, []
    for ex in examples:
        prompt_len, full_len = token_lengths(tokenizer, ex)
        if full_len > max_len:
            if policy == "error" or (policy == "truncate" and prompt_len >= max_len):
                raise DataError(
                    ex.path,
                    f"{full_len} tokens (prompt {prompt_len}) exceed prepare.max_seq_len "
                    f"{max_len} (prepare.truncation: {policy})",
                    ex.line,
                )
            if policy == "drop":
                dropped += 1
                continue
            # truncate: keep the prompt whole and cut the answer's tail, so the label (first) survives
            ids = tokenizer(ex.answer, add_special_tokens=False)["input_ids"]
            ex.messages[-1] = {
                "role": "assistant",
                "content": tokenizer.decode(ids[: max(1, len(ids) - (full_len - max_len))]),
            }
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
    train_raw = read_examples(paths.raw_train, system_prompt, label_regex, cfg.max_line_bytes, cfg.labels)
    eval_raw = read_examples(paths.raw_eval, system_prompt, label_regex, cfg.max_line_bytes, cfg.labels)
    train, train_dupes = dedupe(train_raw)
    evals, eval_dupes = dedupe(eval_raw)

    leaks, most_similar = find_leaks(train, evals, cfg.leakage_ngram, cfg.leakage_threshold)
    leaked = {id(ex) for ex, _, _ in leaks}
    if leaks and not cfg.allow_leakage:
        first = leaks[0][0]
        listing = "\n".join(
            f"  {p['train']} <-> {p['eval']}  similarity {p['similarity']:.2f}"
            for p in (_pair(*leak) for leak in leaks)
        )
        raise DataError(
            first.path,
            f"{len(leaks)} train/eval pair(s) leak (word {cfg.leakage_ngram}-gram "
            f"Jaccard >= prepare.leakage_threshold {cfg.leakage_threshold} after Unicode/case/"
            f"punctuation/whitespace normalisation; set prepare.allow_leakage to accept):\n{listing}",
            first.line,
            first.prompt_field,
        )

    tokenizer = load_tokenizer(paths)
    train, train_len = apply_length_policy(train, tokenizer, cfg.max_seq_len, cfg.truncation)
    evals, eval_len = apply_length_policy(evals, tokenizer, cfg.max_seq_len, cfg.truncation)
    if len(train) < cfg.min_examples:
        raise DataError(
            paths.raw_train,
            f"{len(train)} usable training examples after dropping duplicates and "
            f"over-long ones; prepare.min_examples is {cfg.min_examples}",
        )
    trained = {ex.label for ex in train}
    labels = sorted(cfg.labels or trained)  # a closed set keeps its untrained labels as multiple-choice options
    unseen = [ex for ex in evals if ex.label not in trained]
    if unseen:  # the model cannot learn a label it never sees (a closed set may still lack training examples)
        first = unseen[0]
        lines = ", ".join(f"{ex.line} ({ex.label})" for ex in unseen[:10]) + (" ..." if len(unseen) > 10 else "")
        raise DataError(
            first.path,
            f"label {first.label!r} never occurs in the training data ({paths.raw_train}); eval lines with labels "
            f"training lacks: {lines}",
            first.line,
            first.answer_field,
        )

    random.Random(cfg.seed).shuffle(train)
    train_rows = [{"messages": ex.messages, "label": ex.label} for ex in train]
    eval_rows = [
        {
            "id": i,
            "source_line": ex.line,
            "messages": ex.prompt,
            "reference": ex.answer,
            "label": ex.label,
            "gold": labels.index(ex.label),
            "choices": labels,
            # rendered once here with the base tokenizer's chat template, so lm-eval and the judge see one prompt
            "prompt": chat_texts(tokenizer, ex.messages)[0],
        }
        for i, ex in enumerate(evals)
    ]

    stats = {
        "train": {
            "raw": len(train_raw),
            "duplicates_dropped": train_dupes,
            "final": len(train),
            **train_len,
            "labels": {label: sum(ex.label == label for ex in train) for label in labels},
        },
        "eval": {
            "raw": len(eval_raw),
            "duplicates_dropped": eval_dupes,
            "final": len(evals),
            **eval_len,
            "labels": {label: sum(ex.label == label for ex in evals) for label in labels},
        },
        "leaked": len(leaked),  # training examples in at least one leaked pair
        "leakage": {
            "ngram": cfg.leakage_ngram,
            "threshold": cfg.leakage_threshold,
            "max_similarity": round(most_similar[2], 4) if most_similar else 0.0,
            "most_similar": _pair(*most_similar) if most_similar else None,
            "pairs": [_pair(*leak) for leak in leaks],
        },
        "labels": labels,
        "truncation_policy": cfg.truncation,
        "max_seq_len": cfg.max_seq_len,
    }
    contract = schemas.validate(stats, schemas.DataStats, schemas.DATA)  # before anything is written
    with atomic_dir(paths.prepared_dir) as out:
        write_jsonl(out / paths.prepared_train.name, train_rows)
        write_jsonl(out / paths.prepared_eval.name, eval_rows)
        schemas.write(paths.report(schemas.DATA), contract)  # inside the block: no data.json without the data
    stats["runtime_s"] = round(time.perf_counter() - start, 2)
    return stats
