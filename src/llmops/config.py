"""Typed, validated view of params.yaml: every stage calls `load_params()` once before doing any work.

Unknown keys, wrong types and out-of-range values fail here with the dotted key that is wrong, so a typo in
`dvc exp run -S train.lora.rr=8` stops the stage instead of silently training with the default.
No field has a default here: params.yaml is the one place every value lives (an optional knob is present there
as `null`), so a deleted key fails by its dotted name instead of falling back to a second, drifting copy.

Why one module (~370 lines): one pydantic model per params.yaml section plus the rules across sections;
split, the one schema of params.yaml would be read in pieces.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmops.errors import ConfigError, problems

PARAMS_FILE = Path("params.yaml")


class Strict(BaseModel):
    # Fields carry no defaults (see the module docstring): extra and missing keys both fail by name.
    model_config = ConfigDict(extra="forbid", frozen=True)


_LOOPBACK = ("localhost", "::1")
_SECRET_QUERY = re.compile(r"(?i)(key|token|secret|password|sig|auth)")


def check_url(url: str, schemes: tuple[str, ...] | None = None, https_unless_loopback: bool = False) -> str:
    """A URL param that is safe to commit: no userinfo or credential-like query parameter (params.yaml and
    dvc.lock are committed), a valid port, optionally http(s) only and https for any non-loopback host
    (a bearer key would otherwise cross the network in clear text). Raises ValueError (the key is named
    by the caller's validation error)."""
    from urllib.parse import parse_qsl, urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"malformed URL ({exc})") from None
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "credentials (user:password@) in a URL would be committed (params.yaml, dvc.lock): "
            "pass them through environment variables"
        )
    if any(_SECRET_QUERY.search(name) for name, _ in parse_qsl(parts.query, keep_blank_values=True)):
        raise ValueError("a credential-like query parameter would be committed: pass it through the environment")
    if schemes is not None:
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"expected {' or '.join(s + '://HOST' for s in schemes)}..., got {url!r}")
        host = parts.hostname
        loopback = host in _LOOPBACK or host.startswith("127.") and host.replace(".", "").isdigit()
        if https_unless_loopback and parts.scheme != "https" and not loopback:
            raise ValueError(
                f"http:// to {host}{':' + str(port) if port else ''} would send the API key in clear "
                "text: use https (plain http only for a loopback host such as 127.0.0.1)"
            )
    return url


class Paths(Strict):
    raw_train: Path
    raw_eval: Path
    domain_text: Path
    general_text: Path
    general_evals: Path
    benchmarks: Path
    calibration: Path
    base_dir: Path
    prepared_dir: Path
    adapter_dir: Path
    merged_dir: Path  # llmops export: the adapter merged into the base (not a stage output)
    eval_tasks: Path
    prompts: Path
    reports: Path
    judge_cache: Path

    # Derived file names: named here once so stages and tests agree (dvc.yaml names the same files).
    @property
    def prepared_train(self) -> Path:
        return self.prepared_dir / "train.jsonl"

    @property
    def prepared_eval(self) -> Path:
        return self.prepared_dir / "eval.jsonl"

    @property
    def base_identity(self) -> Path:
        return self.base_dir / "identity.json"

    def report(self, name: str) -> Path:
        return self.reports / name


class TinyModel(Strict):
    vocab_size: int = Field(ge=300, le=65536)
    hidden_size: int = Field(ge=8)
    intermediate_size: int = Field(ge=8)
    num_layers: int = Field(ge=1)
    num_heads: int = Field(ge=1)
    max_position_embeddings: int = Field(ge=64)
    pretrain_steps: int = Field(ge=0)
    batch_size: int = Field(ge=1)
    seq_len: int = Field(ge=16)
    learning_rate: float = Field(gt=0)
    general_weight: int = Field(ge=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyModel:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        return self


class Base(Strict):
    model: str
    revision: str | None
    seed: int
    tiny: TinyModel


class Prepare(Strict):
    min_examples: int = Field(ge=1)
    max_seq_len: int = Field(ge=16)
    truncation: Literal["error", "drop", "truncate"]
    allow_leakage: bool
    max_line_bytes: int = Field(ge=1024)
    leakage_ngram: int = Field(ge=1, le=16)
    leakage_threshold: float = Field(gt=0, le=1)
    label_regex: str
    label_prefix: str = Field(min_length=1)  # the text the label follows in an answer; triage_mc scores after it
    labels: list[str] | None = Field(min_length=2)  # the closed label set; None = open (whatever training holds)
    system_prompt: Path | None
    seed: int

    @model_validator(mode="after")
    def _regex_reads_after_the_prefix(self) -> Prepare:
        # the generative task reads labels with the regex and the multiple-choice task scores them right after
        # the prefix: both must describe one answer format, or the two domain scores measure different things
        label = self.labels[0] if self.labels else "label"
        match = re.search(self.label_regex, f"{self.label_prefix} {label}")
        if not match or match.group(1) != label:
            raise ValueError(
                f"label_regex {self.label_regex!r} does not read {label!r} from {self.label_prefix + ' ' + label!r}: "
                "label_regex and label_prefix must describe the same answer format"
            )
        return self

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None and len(set(labels)) != len(labels):
            raise ValueError(f"a label is repeated: {labels}")
        return labels

    @field_validator("label_regex")
    @classmethod
    def _one_group(cls, pattern: str) -> str:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if compiled.groups != 1:
            raise ValueError("needs exactly one capture group (the label)")
        return pattern

    @field_validator("system_prompt")
    @classmethod
    def _prompt_exists(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"file {path} not found")
        return path


class Lora(Strict):
    r: int = Field(ge=1)
    alpha: float = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    target_modules: list[str] = Field(min_length=1)


class Train(Strict):
    accelerate_config: str
    seed: int
    epochs: float = Field(gt=0)
    max_steps: int
    learning_rate: float = Field(gt=0)
    batch_size: int = Field(ge=1)
    grad_accum: int = Field(ge=1)
    warmup_ratio: float = Field(ge=0, lt=1)
    weight_decay: float = Field(ge=0)
    lr_scheduler: str
    precision: Literal["auto", "fp32", "bf16", "fp16"]
    gradient_checkpointing: bool
    logging_steps: int = Field(ge=1)
    loss_eval_examples: int = Field(ge=1)
    lora: Lora
    mlflow_experiment: str

    @field_validator("accelerate_config")
    @classmethod
    def _config_exists(cls, name: str) -> str:
        if not Path("configs/accelerate", f"{name}.yaml").is_file():
            raise ValueError(f"no launcher config configs/accelerate/{name}.yaml")
        return name


class Eval(Strict):
    backend: Literal["hf", "vllm"]
    batch_size: int | Literal["auto"]
    max_gen_toks: int = Field(ge=1)
    limit: int | None = Field(ge=1)
    domain_task: str
    domain_tasks: list[str]
    regression_tasks: list[str]
    report_only_tasks: list[str]  # domain tasks shown in the report but given no gate rule
    bootstrap_samples: int = Field(ge=100)
    seed: int

    @model_validator(mode="after")
    def _domain_listed(self) -> Eval:
        if self.domain_task not in self.domain_tasks:
            raise ValueError(f"domain_task {self.domain_task!r} must be one of domain_tasks {self.domain_tasks}")
        both = set(self.domain_tasks) & set(self.regression_tasks)
        if both:
            raise ValueError(f"tasks {sorted(both)} are in both domain_tasks and regression_tasks")
        stray = [t for t in self.report_only_tasks if t not in self.domain_tasks or t == self.domain_task]
        if stray:
            raise ValueError(
                f"report_only_tasks {stray} must be domain_tasks other than domain_task {self.domain_task!r} "
                "(the domain task and every regression task are always gated)"
            )
        return self

    def kind(self, task: str) -> str:
        """'domain' or 'regression': the params decide a task's rule, never a metrics file."""
        return "domain" if task in self.domain_tasks else "regression"

    @property
    def tasks(self) -> list[str]:
        return [*self.domain_tasks, *self.regression_tasks]


class Judge(Strict):
    provider: Literal["local", "remote"]
    base_url: str | None
    model: str
    rubrics: list[str] = Field(min_length=1)
    repeats: int = Field(ge=1)
    limit: int | None = Field(ge=1)
    temperature: float = Field(ge=0)
    top_logprobs: int = Field(ge=0, le=20)
    max_tokens: int = Field(ge=1)
    concurrency: int = Field(ge=1)
    timeout_s: float = Field(gt=0)
    max_retries: int = Field(ge=0)
    pass_threshold: float
    min_calibration_kappa: float = Field(ge=-1, le=1)
    min_calibration_valid: int = Field(ge=2)
    min_calibration_valid_share: float = Field(ge=0, le=1)
    prune_cache: bool
    bootstrap_samples: int = Field(ge=100)
    price_per_1k_input_tokens: float = Field(ge=0)
    price_per_1k_output_tokens: float = Field(ge=0)
    seed: int

    @field_validator("base_url")
    @classmethod
    def _safe_endpoint(cls, url: str | None) -> str | None:
        return None if url is None else check_url(url, schemes=("http", "https"), https_unless_loopback=True)

    @model_validator(mode="after")
    def _remote_needs_url(self) -> Judge:
        if self.provider == "remote" and not self.base_url:
            raise ValueError("provider 'remote' needs base_url (the API key comes from OPENAI_API_KEY, never params)")
        return self


class Gate(Strict):
    domain_min: float = Field(ge=0, le=1)
    domain_min_lift: float | None = Field(ge=0, le=1)  # null turns the baseline rule off
    domain_gain_significant: bool
    alpha: float = Field(gt=0, lt=0.5)
    regression_min_ratio: float = Field(gt=0, le=1)
    regression_rule: Literal["noninferiority", "point"]
    regression_required: bool  # false: an empty eval.regression_tasks passes with no forgetting check
    near_zero_base: float = Field(ge=0, le=1)
    judge_min_mean: float
    judge_max_invalid_rate: float = Field(ge=0, le=1)
    judge_max_failure_rate: float = Field(ge=0, le=1)


class Report(Strict):
    base_ref: str
    max_chars: int = Field(ge=1000, le=65536)
    worst_items: int = Field(ge=0)


class Deploy(Strict):
    registry_name: str
    alias: str
    smoke_max_latency_s: float = Field(gt=0)
    smoke_max_tokens: int = Field(ge=1)
    check: bool  # llmops.deploy_check on the registered version before the alias moves
    check_max_label_changes: int = Field(ge=0)
    check_max_logprob_diff: float | None = Field(gt=0)  # None: reported, never a reason to refuse
    merged: bool  # also register the adapter merged into the base (llmops export), checked the same way


class Tracking(Strict):
    uri: str | None

    @field_validator("uri")
    @classmethod
    def _no_credentials(cls, uri: str | None) -> str | None:
        return uri and check_url(uri)  # sqlite:///..., file:, databricks and http(s) servers all pass


class Params(Strict):
    paths: Paths
    tracking: Tracking
    base: Base
    prepare: Prepare
    train: Train
    eval: Eval
    judge: Judge
    gate: Gate
    report: Report
    deploy: Deploy

    @model_validator(mode="after")
    def _every_domain_task_gated(self) -> Params:
        ungated = [
            t for t in self.eval.domain_tasks if t != self.eval.domain_task and t not in self.eval.report_only_tasks
        ]
        if ungated and not self.gate.domain_gain_significant:
            raise ValueError(
                f"eval.domain_tasks {ungated} would have no gate rule with gate.domain_gain_significant false: "
                "list them in eval.report_only_tasks or turn the gain test on"
            )
        return self


MISSING_HINT = "params.yaml sets every knob, there is no default in code; an optional one is set to null"


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; raise ConfigError naming the file and every bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of stage sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        hint = f" ({MISSING_HINT})" if any(e["type"] == "missing" for e in errors) else ""
        raise ConfigError(f"{path}: {problems(errors)}{hint}") from None
