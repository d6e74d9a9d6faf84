"""The deploy check: what is registered answers the held-out domain items as the evaluated adapter did.

Run:  llmops deploy                                        (checks the version it registers, before the alias moves)
      llmops deploy-check --model-uri models:/<name>@<alias>  (any registered version, against this repo's eval)
      llmops export                                         (merged export: checked the same way before it is kept)

The gate vouches for an adapter by its sha256; the answers it judged are the ones eval_tuned recorded per item of
the generative domain task (reports/eval_samples/tuned/<eval.domain_task>.jsonl). A form of the version is loaded as
a serving team loads it (from its own folder: the bundled base + the adapter with transformers + peft, or the merged
folder alone), runs the same lm-eval task (same prompts and filters, greedy, same batch size), and is compared item by
item: identical answers, items whose label changed, and the largest difference in the log-probability of the first
generated token (the evaluated model and the form, each given every prompt alone). A wrong base, a corrupted tensor
or a lossy merge shows in both; the same weights on the same machine give the same answers and ~1e-6 nats.
Refusal: more label changes than deploy.check_max_label_changes, or a log-probability difference above
deploy.check_max_logprob_diff (null: reported, never a reason).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from llmops import schemas
from llmops.artifacts import sha256_tree
from llmops.config import Params
from llmops.errors import StageError
from llmops.schemas import DeployCheck, FormCheck, LabelChange

Form = Literal["adapter", "merged"]


def recorded(params: Params) -> dict[str, dict[str, Any]]:
    """doc_id -> the eval stage's sample for the domain task (its primary filter), for the gated adapter."""
    from llmops.lm_eval_results import load_samples, samples_dir

    task, paths = params.eval.domain_task, params.paths
    tuned = schemas.read(paths.report(schemas.EVAL_TUNED), schemas.TunedEvalResults)
    current = sha256_tree(paths.adapter_dir)
    if tuned.adapter_sha256 != current:
        raise StageError(
            f"{paths.report(schemas.EVAL_TUNED)}: evaluated adapter {tuned.adapter_sha256[:12]}, not the current "
            f"{current[:12]}; rerun eval_tuned (dvc repro) before checking a deploy against it"
        )
    samples = load_samples(samples_dir(params, "tuned")).get(task)
    if not samples:
        raise StageError(f"{samples_dir(params, 'tuned')}: no samples of eval.domain_task {task!r}; rerun eval_tuned")
    return by_doc(samples)


def by_doc(samples: list[dict]) -> dict[str, dict[str, Any]]:
    """lm-eval samples keyed by doc_id, keeping each item's first filter (the task's primary one)."""
    out: dict[str, dict[str, Any]] = {}
    for sample in samples:
        out.setdefault(str(sample["doc_id"]), sample)
    return out


def answer(sample: dict) -> str:
    """The raw generated text (lm-eval keeps it as [[text]])."""
    resps = sample.get("resps")
    while isinstance(resps, list) and resps:
        resps = resps[0]
    return resps if isinstance(resps, str) else ""


def label(sample: dict) -> str:
    """The label the task's filter extracted (lm-eval keeps it as [label])."""
    got = sample.get("filtered_resps")
    while isinstance(got, list) and got:
        got = got[0]
    return str(got) if got is not None else ""


def context(sample: dict) -> str:
    """The prompt lm-eval gave the model (generate_until: [context, gen_kwargs])."""
    args = sample["arguments"]
    first = args[0] if isinstance(args, list) else next(iter(args.values()))
    return first[0] if isinstance(first, list) else first["arg_0"]


def first_token_logprobs(source: Any, adapter: Path | None, contexts: list[str], tokens: list[int] | None = None):
    """(token, log-probability) of the first generated token for each prompt, each run alone (no padding): the
    model's own greedy choice, or the given `tokens` (another model's choice, to compare the same event)."""
    import torch

    from llmops.model import load_model, load_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = load_tokenizer(source)
    model = load_model(source, adapter=adapter, device=device).eval()
    out = []
    with torch.inference_mode():
        for i, text in enumerate(contexts):
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids.to(device)
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)
            token = int(logprobs.argmax()) if tokens is None else tokens[i]
            out.append((token, float(logprobs[token])))
    del model
    return out


def check_form(
    params: Params, form: Form, source: Any, adapter: Path | None, want: dict[str, dict[str, Any]]
) -> FormCheck:
    """Run the domain task on `source` (+ `adapter`) and compare it with the recorded samples `want`."""
    from llmops.eval_suite import run_lm_eval

    start = time.perf_counter()
    task = params.eval.domain_task
    got = by_doc(run_lm_eval(params, adapter, source=source, tasks=[task])["samples"][task])
    missing = sorted(set(want) ^ set(got))
    if missing:
        raise StageError(
            f"deploy check: the {form} form answered items {missing[:5]} that eval_tuned did not record, or "
            f"the reverse (eval.limit or the eval data changed since eval_tuned ran?); rerun eval_tuned"
        )
    ids = sorted(want, key=lambda d: (len(d), d))
    changes = [
        LabelChange(
            doc_id=d,
            line=(want[d].get("doc") or {}).get("source_line"),
            evaluated=label(want[d]),
            deployed=label(got[d]),
        )
        for d in ids
        if label(want[d]) != label(got[d])
    ]
    contexts = [context(want[d]) for d in ids]
    evaluated = first_token_logprobs(params.paths, params.paths.adapter_dir, contexts)
    deployed = first_token_logprobs(source, adapter, contexts, [t for t, _ in evaluated])
    diff = max((abs(a - b) for (_, a), (_, b) in zip(evaluated, deployed, strict=True)), default=0.0)
    cfg = params.deploy
    reasons = []
    if len(changes) > cfg.check_max_label_changes:
        shown = ", ".join(
            f"doc {c.doc_id}" + (f" (line {c.line})" if c.line else "") + f": {c.evaluated!r} -> {c.deployed!r}"
            for c in changes[:5]
        )
        reasons.append(
            f"{len(changes)} of {len(ids)} labels changed (deploy.check_max_label_changes "
            f"{cfg.check_max_label_changes}): {shown}"
        )
    if cfg.check_max_logprob_diff is not None and diff > cfg.check_max_logprob_diff:
        reasons.append(
            f"first-token log-probability differs by up to {diff:.3g} nats (deploy.check_max_logprob_diff "
            f"{cfg.check_max_logprob_diff})"
        )
    return FormCheck(
        form=form,
        items=len(ids),
        identical_answers=sum(answer(want[d]) == answer(got[d]) for d in ids),
        label_changes=changes,
        max_first_token_logprob_diff=round(diff, 8),
        passed=not reasons,
        reasons=reasons,
        runtime_s=round(time.perf_counter() - start, 2),
    )


def run(params: Params, forms: list[tuple[Form, Any, Path | None]]) -> DeployCheck:
    """Check each (form, source, adapter) against eval_tuned's answers; write reports/deploy_check.json."""
    want = recorded(params)
    checks = [check_form(params, form, source, adapter, want) for form, source, adapter in forms]
    result = DeployCheck(
        task=params.eval.domain_task,
        adapter_sha256=sha256_tree(params.paths.adapter_dir),
        max_label_changes=params.deploy.check_max_label_changes,
        max_logprob_diff=params.deploy.check_max_logprob_diff,
        forms=checks,
        passed=all(c.passed for c in checks),
    )
    schemas.write(params.paths.report(schemas.DEPLOY_CHECK), result)
    return result


def summary(result: DeployCheck) -> str:
    """One line per form, for tags, the model card and error messages."""
    return "; ".join(
        f"{c.form}: {c.identical_answers}/{c.items} identical answers, {len(c.label_changes)} label changes, "
        f"max first-token logprob diff {c.max_first_token_logprob_diff:.2g}" + ("" if c.passed else " (FAILED)")
        for c in result.forms
    )


def failure(result: DeployCheck) -> str:
    return "; ".join(f"{c.form}: {r}" for c in result.forms for r in c.reasons)
