"""Stage `train`: LoRA-tune the pinned base on the prepared data; save a standard peft adapter folder.

Run:  llmops train-launch --config_file configs/accelerate/cpu.yaml   (what dvc.yaml runs: llmops.launcher starts
      accelerate launch --config_file configs/accelerate/cpu.yaml -m llmops.train   tied to its caller's life)
      llmops train                                                       (same training, no launcher)

Loss is on the answer tokens only (prompt tokens are masked with -100), prompts go through the base
tokenizer's chat template, and every seed is fixed, so two runs on one machine give byte-identical
adapter weights. Plain transformers Trainer + peft rather than TRL's SFTTrainer (why: docs/pipeline.md, Training).

Outputs: paths.adapter_dir (adapter_model.safetensors + adapter_config.json + tokenizer),
reports/train.json (deterministic quality metrics), reports/train_perf.json (runtime, tokens/s, memory,
the loop's page faults and malloc setting, versions and hardware), reports/train_loss.csv (the loss curve
DVC plots), reports/mlflow_run.json.

Why one module (~300 lines): the training script, top to bottom: data, LoRA model, Trainer, metrics, MLflow;
the launcher is llmops.launcher and its self-measurement llmops.perf.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from llmops import schemas
from llmops.artifacts import (
    atomic_dir,
    csv_text,
    environment,
    read_jsonl,
    safe_url,
    sha256_tree,
    write_json,
    write_text,
)
from llmops.config import Params, Train
from llmops.errors import DataError, StageError
from llmops.model import chat_texts, identity, load_model, load_tokenizer
from llmops.perf import Phases, keep_freed_memory, minor_faults
from llmops.runner import set_parent_death_signal
from llmops.tracking import MLFLOW_BY_ENV

IGNORE_INDEX = -100  # label value the loss skips


def tokenize_example(tokenizer, messages: list[dict[str, str]], max_len: int) -> dict[str, list[int]]:
    """input_ids for prompt + answer, labels masked on the prompt so only the answer is learned."""
    prompt, full = chat_texts(tokenizer, messages)
    if not full.startswith(prompt):
        raise StageError(
            "the chat template renders the prompt differently with and without the answer; "
            "completion-only masking needs a template where the prompt is a prefix"
        )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None and (not answer_ids or answer_ids[-1] != tokenizer.eos_token_id):
        answer_ids.append(tokenizer.eos_token_id)  # the model must learn to stop
    ids = (prompt_ids + answer_ids)[:max_len]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_len]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def load_dataset(path: Path, tokenizer, max_len: int):
    from datasets import Dataset

    if not path.is_file():
        raise DataError(path, "missing; run the prepare stage first (dvc repro prepare)")
    rows = [row for _, row in read_jsonl(path)]
    return Dataset.from_list([tokenize_example(tokenizer, r["messages"], max_len) for r in rows])


def pick_precision(cfg: Train) -> dict[str, bool]:
    import torch

    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if precision != "fp32" and not torch.cuda.is_available():
        raise StageError(f"train.precision {cfg.precision!r} needs a GPU; use fp32 or auto on CPU")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def build_lora_model(params: Params):
    import torch
    from peft import LoraConfig, get_peft_model

    cfg = params.train
    dtype = torch.bfloat16 if pick_precision(cfg)["bf16"] else torch.float32
    model = load_model(params.paths, dtype=dtype)
    present = {name.split(".")[-1] for name, _ in model.named_modules()}
    missing = [m for m in cfg.lora.target_modules if m not in present]
    if missing:
        raise StageError(f"train.lora.target_modules {missing} are not modules of this base model")
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        task_type="CAUSAL_LM",
        bias="none",
    )
    return get_peft_model(model, lora)


def stable_adapter_config(path: Path) -> None:
    """peft writes target_modules from a set, so its order changes with Python's hash seed; sort it so
    two identical trainings give byte-identical adapter folders."""
    import json

    config = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def loss_curve_csv(log_history: list[dict[str, Any]]) -> str:
    return csv_text(
        ["step", "loss", "learning_rate"],
        ([e["step"], round(e["loss"], 6), e.get("learning_rate", "")] for e in log_history if "loss" in e),
    )


def last_logged_loss(log_history: list[dict[str, Any]]) -> tuple[float | None, int | None]:
    """The last logged training loss (the mean over its logging window) and its step."""
    for entry in reversed(log_history):
        if "loss" in entry:
            return entry["loss"], entry["step"]
    return None, None


def progress_callback():
    """A line every 30 s with the step, the latest logged loss and an estimate of what is left: the Trainer's own
    bar is off (disable_tqdm), since every redraw is a line in a CI log."""
    from transformers import TrainerCallback

    from llmops.progress import Every

    class ProgressLines(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.tick = Every("train: step", state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
            self.tick(state.global_step, f"loss {losses[-1]:.3f}" if losses else "")

    return ProgressLines()


def run(params: Params) -> dict[str, Any]:
    """Train, save the adapter and metrics; only the main process writes files and logs to MLflow."""
    clock = Phases()
    malloc = keep_freed_memory()
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    clock.lap("import")
    cfg, paths = params.train, params.paths
    set_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    tokenizer = load_tokenizer(paths)
    dataset = load_dataset(paths.prepared_train, tokenizer, params.prepare.max_seq_len)
    model = build_lora_model(params)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())

    scratch = Path(tempfile.mkdtemp(prefix="llmops-train-"))
    args = TrainingArguments(
        output_dir=str(scratch),
        seed=cfg.seed,
        data_seed=cfg.seed,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        **pick_precision(cfg),
    )
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, padding=True)
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[progress_callback()]
    )
    # before/after loss on a fixed-size slice: a full pass would cost a third of an epoch on a large dataset
    probe = dataset.select(range(min(cfg.loss_eval_examples, len(dataset))))
    clock.lap("setup")
    loss_before = trainer.evaluate(eval_dataset=probe)["eval_loss"]
    clock.lap("loss_before")
    cpu, faults = time.process_time(), minor_faults()
    result = trainer.train()
    runtime = clock.lap("loop")
    loop_cpu_s = time.process_time() - cpu  # all threads' CPU time: far steadier than wall on a busy machine
    loop_faults = minor_faults() - faults
    loss_after = trainer.evaluate(eval_dataset=probe)["eval_loss"]
    clock.lap("loss_after")
    shutil.rmtree(scratch, ignore_errors=True)
    if not trainer.is_world_process_zero():
        return {}

    with atomic_dir(paths.adapter_dir) as out:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        stable_adapter_config(out / "adapter_config.json")
    tokens = int(trainer.state.num_input_tokens_seen)
    last_loss, last_step = last_logged_loss(trainer.state.log_history)
    metrics = {
        "loss_before": round(loss_before, 6),
        "loss_after": round(loss_after, 6),
        "loss_eval_examples": len(probe),
        "train_loss_mean": round(result.training_loss, 6),
        "train_loss_last": None if last_loss is None else round(last_loss, 6),
        "train_loss_last_step": last_step,
        "steps": trainer.state.global_step,
        "examples": len(dataset),
        "tokens_seen": tokens,
        "trainable_params": trainable,
        "trainable_share": round(trainable / total, 6),
    }
    schemas.write(paths.report(schemas.TRAIN), schemas.validate(metrics, schemas.TrainMetrics, schemas.TRAIN))
    write_text(paths.report("train_loss.csv"), loss_curve_csv(trainer.state.log_history))
    clock.lap("save")
    perf = {
        "runtime_s": round(runtime, 3),
        "loop_cpu_s": round(loop_cpu_s, 3),
        "loop_minor_faults": loop_faults,  # pages the kernel had to map in during the loop: see keep_freed_memory
        "tokens_per_s": round(tokens / runtime, 1),
        "steps_per_s": round(trainer.state.global_step / runtime, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else 0,
        "malloc": malloc,
        "environment": environment(),
    }
    if os.environ.get(MLFLOW_BY_ENV) != "launcher":
        log_mlflow(params, metrics, perf, trainer.state.log_history)
        clock.lap("mlflow")
    # written last so the phases include MLflow; `process` = since the interpreter started (imports included)
    perf["phases_s"] = clock.summary()
    write_json(paths.report("train_perf.json"), perf)
    return metrics


def log_mlflow(params: Params, metrics: dict, perf: dict, history: list[dict[str, Any]]) -> None:
    """One MLflow run per training: params, per-step loss, final metrics, environment, base identity."""
    from llmops.tracking import flatten, mlflow, tracking_uri

    ml = mlflow()
    ml.set_experiment(params.train.mlflow_experiment)
    paths = params.paths
    with ml.start_run() as run:
        # one log_batch (one store transaction, chunked by MLflow past its limits) instead of a call per metric:
        # per-step calls would make a long run's logging grow with its steps
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        logged = {f"train.{k}": v for k, v in flatten(params.train.model_dump(mode="json")).items()}
        logged.update({"base.model": params.base.model, "base.revision": str(identity(paths).get("revision"))})
        values = {f"train.{k}": float(v) for k, v in metrics.items() if v is not None}
        values.update({f"train.{k}": float(v) for k, v in perf.items() if isinstance(v, (int, float))})
        ml.MlflowClient().log_batch(
            run.info.run_id,
            metrics=[Metric("train.step_loss", e["loss"], now, e["step"]) for e in history if "loss" in e]
            + [Metric(k, v, now, 0) for k, v in values.items()],
            params=[Param(k, str(v)) for k, v in logged.items()],
            tags=[RunTag("adapter_sha256", sha256_tree(paths.adapter_dir)), RunTag("stage", "train")],
        )
        ml.log_dict(perf["environment"], "environment.json")
        ml.log_dict(identity(paths), "base_identity.json")
        run_id, experiment_id = run.info.run_id, run.info.experiment_id
    # credentials can ride in a tracking URI (https://user:token@host): keep only scheme and host/path
    schemas.write(
        paths.report(schemas.MLFLOW_RUN),
        schemas.MlflowRun(run_id=run_id, experiment_id=experiment_id, tracking_uri=safe_url(tracking_uri())),
    )


def main() -> None:
    """Entry point for `accelerate launch -m llmops.train`: exits when the accelerate launcher dies."""
    from llmops.runner import exit_now, run_stage

    set_parent_death_signal(signal.SIGTERM)
    if os.getpgid(os.getppid()) != os.getpgid(0):  # accelerate died before prctl: we were re-parented
        sys.exit(128 + signal.SIGTERM)

    run_stage(run)
    exit_now(0)  # the launcher waits for this process: skip the teardown of torch, transformers, peft (runner)


if __name__ == "__main__":
    main()
