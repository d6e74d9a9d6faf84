"""llmops: a reproducible LoRA fine-tuning pipeline. Stages live one per module; dvc.yaml wires them."""

__version__ = "0.1.0"
