"""The model card deploy writes into the registered version (README.md) and reports/model_card.md: a Hugging Face card
(huggingface_hub's ModelCardData: base_model, library_name, tags, datasets, model-index with every task's base and
tuned score) and the sections a reviewer needs: data, training parameters, evaluation, the deploy check, lineage,
limitations, usage.
"""

from __future__ import annotations

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from llmops import schemas
from llmops.artifacts import md_table
from llmops.config import Params
from llmops.schemas import DataStats, DeployCheck, EvalComparison, GateReport, JudgeReport, Lineage, Model


def read_report(params: Params, name: str, model: type[Model]) -> Model | None:
    """A report validated against its contract; None when missing. One that breaks its contract stops the deploy."""
    path = params.paths.report(name)
    return schemas.read(path, model) if path.is_file() else None


def model_card(params: Params, lin: Lineage, gate: GateReport, check: DeployCheck | None = None) -> str:
    """A Hugging Face model card: YAML metadata (incl. model-index) + the sections a reviewer needs."""
    compare = read_report(params, schemas.EVAL_COMPARE, EvalComparison)
    data = read_report(params, schemas.DATA, DataStats)
    judge = read_report(params, schemas.JUDGE, JudgeReport)
    tasks = compare.tasks if compare is not None else {}
    base = lin.base_model
    data_card = ModelCardData(
        model_name=params.deploy.registry_name,
        base_model=base if base != "tiny" else None,  # the demo's tiny base is built locally, not on the hub
        library_name="peft",
        pipeline_tag="text-generation",
        tags=["lora", "peft", "llmops", f"gate-{gate.verdict}"],
        datasets=[str(params.paths.raw_train), str(params.paths.raw_eval)],
        eval_results=[
            EvalResult(
                task_type="text-generation",
                dataset_type=name,
                dataset_name=name,
                dataset_split="test",
                metric_type=t.metric,
                metric_name=f"{t.metric} ({side})",
                metric_value=value,
            )
            for name, t in tasks.items()
            for side, value in (("tuned", t.tuned), ("base", t.base))
        ]
        or None,
    )
    table = md_table(
        ["task", "kind", "metric", "n", "base", "tuned", "delta 95% CI", "ratio"],
        [[n, t.kind, t.metric, t.n, t.base, t.tuned, t.delta_ci, t.ratio] for n, t in tasks.items()]
        or [["not available", "", "", "", "", "", "", ""]],
    )
    judged = (
        "\n".join(
            f"- {r}: tuned mean {v.tuned.mean} (base {v.base.mean})"
            for r, v in (judge.rubrics if judge is not None else {}).items()
        )
        or "- not available"
    )
    train = params.train.model_dump(mode="json")
    n_train, n_eval, labels = (data.train.final, data.eval.final, data.labels) if data is not None else (None, None, [])
    body = "\n".join(
        [
            f"# {params.deploy.registry_name}",
            "",
            f"A LoRA adapter (peft) for `{base}`"
            + (" (the demo's tiny Llama-architecture model, built and pretrained locally)" if base == "tiny" else "")
            + ", fine-tuned by the llmops pipeline and shipped because its quality gate passed.",
            "",
            "## Data",
            "",
            f"Training data `{params.paths.raw_train}` ({n_train} examples after validation), held-out "
            f"evaluation `{params.paths.raw_eval}` ({n_eval} examples); labels: {', '.join(labels)}. "
            f"Prepared data sha256 `{lin.data_sha256}`.",
            "",
            "## Training parameters",
            "",
            "```yaml",
            yaml.safe_dump({"train": train}, sort_keys=False).rstrip(),
            "```",
            "",
            "## Evaluation",
            "",
            table,
            "",
            "LLM judge:",
            judged,
            "",
            f"Gate verdict: **{gate.verdict}** ({len(gate.rules)} rules; see `gate.json` logged with this version).",
            "",
            "## Deploy check",
            "",
            check_section(check),
            "",
            "## Lineage",
            "",
            f"- git commit: `{lin.git_sha}`" + (" (working tree had uncommitted changes)" if lin.git_dirty else ""),
            f"- params.yaml sha256: `{lin.params_sha256}`",
            f"- adapter sha256 (llmops sha256_tree): `{lin.adapter_sha256}`",
            f"- base model: `{base}` revision `{lin.base_revision}` weights/config sha256 `{lin.base_weights_sha256}`",
            *[f"- DVC out `{p}`: md5 `{m}`" for p, m in lin.dvc_outs_md5.items()],
            "",
            "## Limitations",
            "",
            "- Evaluated only on the held-out split of the same domain data and the regression tasks listed above; "
            "scores on other inputs are unknown.",
            "- Forgetting is checked on a few general tasks only; the gate's thresholds bound the measured loss, not all loss.",
            "- LLM-judge scores are advisory unless the judge was calibrated against human labels (see `judge.json`).",
            "- The demo base model is tiny (~0.2M parameters): its outputs demonstrate the pipeline, not a useful assistant."
            if base == "tiny"
            else "- Inherits the base model's licence, biases and limitations.",
            "",
            "## Usage",
            "",
            "```python",
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM",
            f"base = AutoModelForCausalLM.from_pretrained({(base if base != 'tiny' else 'base')!r})  # in the version folder",
            "model = PeftModel.from_pretrained(base, 'adapter')",
            "```",
            "",
        ]
    )
    return str(ModelCard(f"---\n{data_card.to_yaml()}\n---\n\n{body}"))


def check_section(check: DeployCheck | None) -> str:
    """The card's "Deploy check" section: what llmops.deploy_check found, or that it did not run."""
    if check is None:
        return "Not run (deploy.check: false): the version is gated and smoke-tested only."
    from llmops.deploy_check import summary

    return (
        f"Loaded from the registry in an empty folder, each form answered the {check.forms[0].items if check.forms else 0} "
        f"held-out items of `{check.task}` greedily and was compared with the answers the gate judged "
        f"(adapter `{check.adapter_sha256[:12]}`): {summary(check)}. Verdict: "
        f"**{'passed' if check.passed else 'failed'}** (at most {check.max_label_changes} label changes, "
        f"{check.max_logprob_diff} nats; `deploy_check.json` is logged with this version)."
    )
