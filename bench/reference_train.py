"""The plain-library baseline the `train` stage is measured against: transformers Trainer + peft, nothing else.

Run:  python bench/reference_train.py --base models/base --data data/prepared/train.jsonl --out /tmp/ref

Same model, data, LoRA settings, steps and seed as params.yaml `train:`, written the way a user would without
the template: no validation, no MLflow, no metrics files. bench/train_overhead.py times both.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
import yaml
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Trainer,
    TrainingArguments,
    set_seed,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    cfg = yaml.safe_load(open(args.params))["train"]
    set_seed(cfg["seed"])
    tok = AutoTokenizer.from_pretrained(args.base)
    rows = []
    for line in open(args.data, encoding="utf-8"):
        messages = json.loads(line)["messages"]
        prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(messages, tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(full[len(prompt) :], add_special_tokens=False)["input_ids"]
        if a_ids[-1:] != [tok.eos_token_id]:  # the stage teaches the model to stop: same tokens, same work
            a_ids.append(tok.eos_token_id)
        rows.append(
            {
                "input_ids": p_ids + a_ids,
                "attention_mask": [1] * (len(p_ids) + len(a_ids)),
                "labels": [-100] * len(p_ids) + a_ids,
            }
        )
    model = AutoModelForCausalLM.from_pretrained(args.base)
    lora = cfg["lora"]
    model = get_peft_model(
        model,
        LoraConfig(
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=lora["target_modules"],
            task_type="CAUSAL_LM",
        ),
    )
    targs = TrainingArguments(
        output_dir=args.out,
        seed=cfg["seed"],
        num_train_epochs=cfg["epochs"],
        max_steps=cfg["max_steps"],
        learning_rate=cfg["learning_rate"],
        per_device_train_batch_size=cfg["batch_size"],
        warmup_steps=cfg["warmup_ratio"],
        logging_steps=cfg["logging_steps"],
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        use_cpu=True,
    )
    trainer = Trainer(
        model=model,
        args=targs,
        train_dataset=Dataset.from_list(rows),
        data_collator=DataCollatorForSeq2Seq(tok, label_pad_token_id=-100, padding=True),
    )
    start, cpu, faults = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    trainer.train()
    runtime, cpu = time.perf_counter() - start, time.process_time() - cpu
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    model.save_pretrained(args.out)
    print(
        json.dumps(
            {
                "train_runtime_s": runtime,
                "train_cpu_s": cpu,
                "train_minor_faults": faults,
                "tokens": int(trainer.state.num_input_tokens_seen),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
