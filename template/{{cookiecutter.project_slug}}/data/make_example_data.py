"""Placeholder {{ cookiecutter.domain_name }} data, so the pipeline runs before you have real data. REPLACE IT.

Run:  python data/make_example_data.py    (rewrites the files named by params.yaml paths.raw_train,
                            paths.raw_eval, paths.domain_text and paths.calibration; same seed, same bytes)

The template's post-generation hook ran this once; its outputs are committed. They are synthetic: each
input names its label's words among shared filler, so the tiny demo model can learn the mapping and every
stage has something to measure. They say nothing about your real task.

To use your own data, overwrite these files (and delete this script):
- paths.raw_train / paths.raw_eval: one JSON object per line, either
    {"input": "<one {{ cookiecutter.domain_name }} item>", "output": "{{ cookiecutter.label_prefix }}: <label>{% if cookiecutter.task_kind == 'classify_and_act' %}\\n{{ cookiecutter.detail_prefix }}: <one sentence>.{% endif %}"}
  or {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "{{ cookiecutter.label_prefix }}: ..."}]}.
  At least prepare.min_examples training records and 40+ held-out ones, no input in both files.
- paths.domain_text: {"text": "..."} lines of unlabelled domain text (manuals, guidelines, past items).
  Only the tiny base model pretrains on it; a real base model ignores it.
- paths.calibration: {"id", "rubric", "prompt", "reference", "answer", "human_score"} lines: answers your
  reviewers graded with prompts/rubrics/triage_quality.yaml. The judge counts only when it agrees with them.
`dvc repro` then reruns everything downstream of what changed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

DOMAIN = {{ cookiecutter.domain_name | tojson }}
DESCRIPTION = {{ cookiecutter.domain_description | tojson }}
LABELS = {{ cookiecutter.labels.split(',') | map('trim') | select | list | tojson }}
WITH_ACTION = {{ 'True' if cookiecutter.task_kind == 'classify_and_act' else 'False' }}  # answers carry a free-text line
LABEL = {{ (cookiecutter.label_prefix | trim ~ ': ') | tojson }}  # the answer's label prefix (params prepare.label_prefix)
DETAIL = {{ (cookiecutter.detail_prefix | trim ~ ': ') | tojson }}  # ... and its free-text line's

# Deliberately generic wording (no domain vocabulary): each input = an opening, one sentence naming the label's
# words, and neutral filler shared by all labels, so the label is learnable and nothing else is.
SIGNALS = [
    "the item is clearly about {w}",
    "this looks like a case of {w}",
    "{w} is mentioned twice in the text",
    "the author asks a question about {w}",
    "the first paragraph is about {w}",
    "a reviewer marked it as {w}",
    "the summary line reads {w}",
    "most of the text concerns {w}",
]
ACTIONS = ["pass it to the {w} reviewer", "ask a specialist in {w} to look at it", "file it under {w}"]
OPENINGS = ["Placeholder item {ref}:", "Example {ref}:", "Sample text:", "Item from batch {batch}:", "Record {ref}:",
            "Synthetic example, version {n}:"]
FILLER = ["It has {n} lines.", "Batch {batch}.", "Written on day {n}.", "{n} similar items exist.",
          "Sample set {batch}.", ""]
BATCHES = ["A", "B", "C", "D", "E", "F", "G", "H"]


def words(label: str) -> str:
    return label.replace("_", " ").replace("-", " ")


def _fill(template: str, rng: random.Random, label: str = "") -> str:
    return template.format(w=words(label), ref=f"#{rng.randint(10000, 99999)}", batch=rng.choice(BATCHES),
                           n=rng.randint(2, 90))


def example(label: str, rng: random.Random) -> tuple[str, str]:
    parts = [_fill(rng.choice(OPENINGS), rng), _fill(rng.choice(SIGNALS), rng, label) + ".",
             _fill(rng.choice(FILLER), rng)]
    answer = f"{LABEL}{label}"
    if WITH_ACTION:
        answer += f"\n{DETAIL}{_fill(rng.choice(ACTIONS), rng, label)}."
    return " ".join(p for p in parts if p), answer


def calibration(items: list[tuple[str, str]], rng: random.Random) -> list[dict]:
    """Graded answers for checking the judge against people (paths.calibration), every score 1-5 present.
    PLACEHOLDER grades: they follow the rubric's levels mechanically, which is not what calibration means.
    Replace them with your reviewers' scores of real model answers."""
    rows = []
    for i, (text, reference) in enumerate(items):
        label = reference.split("\n")[0].removeprefix(LABEL)
        wrong = LABELS[(LABELS.index(label) + 1) % len(LABELS)]
        if WITH_ACTION:
            other = next(a for a in ACTIONS if _fill(a, rng, label) not in reference)
            variants = [(reference, 5), (f"{LABEL}{label}\n{DETAIL}{_fill(other, rng, label)}.", 4),
                        (f"{LABEL}{label}", 3), (f"{LABEL}{wrong}\n{DETAIL}{_fill(other, rng, label)}.", 2)]
        else:
            variants = [(reference, 5), (f"{LABEL}{label}\nThe item is unclear, but {label} fits best.", 4),
                        (f"{LABEL}{label} or {wrong}", 3), (f"{LABEL}{wrong}", 2)]
        answer, score = (variants + [("I cannot tell.", 1)])[i % 5]
        rows.append({"id": f"cal-{i:02d}", "rubric": "triage_quality", "prompt": text, "reference": reference,
                     "answer": answer, "human_score": score})
    return rows


def build(seed: int = 0, train_size: int = 60, eval_size: int = 60, unlabelled_size: int = 300) -> dict[str, list]:
    rng = random.Random(seed)
    seen: set[str] = set()

    def unique(count: int) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        while len(out) < count:
            text, answer = example(LABELS[len(out) % len(LABELS)], rng)  # balanced classes
            key = " ".join(text.lower().split())
            if key not in seen:  # no duplicates, no train/eval leakage (prepare checks both)
                seen.add(key)
                out.append((text, answer))
        return out

    train, held_out, unlabelled = unique(train_size), unique(eval_size), unique(unlabelled_size)
    rng.shuffle(train)
    rng.shuffle(held_out)
    train_records: list[dict] = []
    for i, (text, answer) in enumerate(train):
        if i % 5 == 4:  # both accepted record shapes appear, as a reminder that either works
            train_records.append({"messages": [{"role": "user", "content": text},
                                               {"role": "assistant", "content": answer}]})
        else:
            train_records.append({"input": text, "output": answer})
    guide = [f"Guide: {DESCRIPTION}"]
    for label in LABELS:
        guide.append(f"Guide: in {DOMAIN}, an item about {words(label)} gets the label {label}.")
        if WITH_ACTION:
            guide += [f"Guide: for {words(label)} items, {_fill(a, rng, label)}.\n{LABEL}{label}\n"
                      f"{DETAIL}{_fill(a, rng, label)}." for a in ACTIONS]
    return {
        "calibration": calibration(unique(20), rng),
        "raw_train": train_records,
        "raw_eval": [{"input": text, "output": answer} for text, answer in held_out],
        "domain_text": [{"text": line} for line in guide] + [{"text": text} for text, _ in unlabelled],
    }


def main() -> None:
    paths = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))["paths"]
    for key, records in build().items():
        path = Path(paths[key])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        print(f"{path}: {len(records)} records")


if __name__ == "__main__":
    main()
