"""Output contracts: the files one stage writes and a later one reads, as pydantic models.

Writers dump a model (`write(path, model)`), readers validate (`read(path, Model)`), so a field's name and
meaning live here once instead of in dotted-string lookups spread over the stages. No NaN or infinite
value validates anywhere (`allow_inf_nan=False`): a metric that is not a number is an error the reader
names, never a silent pass.

Used by: prepare (writes data.json), train (train.json), evaluate (eval_<model>.json, eval_compare.json),
judge (judge.json), gate (reads eval_compare.json and judge.json, writes gate.json), report and deploy (read
them). tests/test_schemas.py validates every committed reports/*.json against its model.

Why one module (~440 lines): every contract stages exchange, side by side on purpose; a field's meaning is
looked up in one place.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from llmops.artifacts import write_json
from llmops.errors import StageError, problems

# The file names, relative to paths.reports (dvc.yaml names the same files).
DATA = "data.json"
TRAIN = "train.json"
TRAIN_PERF = "train_perf.json"
EVAL_BASE = "eval_base.json"
EVAL_TUNED = "eval_tuned.json"
EVAL_COMPARE = "eval_compare.json"
JUDGE = "judge.json"
JUDGE_ITEMS = "judge_items.jsonl"
GATE = "gate.json"
REPORT = "report.md"
MLFLOW_RUN = "mlflow_run.json"
DEPLOY_CHECK = "deploy_check.json"


class TaskKind(StrEnum):
    domain = "domain"
    regression = "regression"


class Verdict(StrEnum):
    passed = "pass"
    failed = "fail"
    error = "error"  # could not judge: the gate fails closed

    @property
    def exit_code(self) -> int:
        return {"pass": 0, "fail": 1, "error": 2}[self.value]


class ContractError(StageError, ValueError):
    """A stage output that does not match its contract; the message names the file and the field. A writer
    that produces one stops like any user-facing error (one line, exit 1); the gate makes it "could not judge"."""


class Contract(BaseModel):
    # extra="forbid": a misspelt or foreign field is a finding, not something to ignore; strict: "0.9" is not a
    # number and 1 is not a bool (a hand-edited or foreign file must not pass the gate by coercion); the two
    # enum fields opt out, since JSON spells an enum as its string
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


Probability = Annotated[float, Field(ge=0, le=1)]
Interval = Annotated[list[float], Field(min_length=2, max_length=2)]


class Baseline(Contract):
    """Scores of input-blind answers on a domain task, from its gold labels."""

    labels: int = Field(ge=1)
    chance: Probability  # 1 / number of labels
    majority: Probability  # share of the most common label


class AnswerStats(Contract):
    """Generated answers of the tuned model (generative tasks): degenerate output shows here first."""

    empty: int = Field(ge=0)
    distinct: int = Field(ge=0)


class TaskComparison(Contract):
    """One task, base vs tuned over the same items (llmops.stats.compare plus kind and metric)."""

    kind: Annotated[TaskKind, Strict(False)]
    metric: str
    n: int = Field(ge=1)
    base: float
    tuned: float
    delta: float
    delta_ci: Interval
    ratio: float | None
    ratio_ci: Interval | None
    diff_sd: float = Field(ge=0)  # sample standard deviation of the per-item differences
    binary: bool
    gained: int | None = Field(ge=0)  # 0/1 metrics: items only tuned got right
    lost: int | None = Field(ge=0)  # ... and only base got right
    p_value: Probability  # two-sided, for readers; the gate runs its own one-sided tests
    test: str
    baseline: Baseline | None = None  # domain tasks
    tuned_answers: AnswerStats | None = None  # generative tasks

    def degenerate(self) -> str | None:
        """A plain-words finding when the tuned model's answers are empty or all alike."""
        a = self.tuned_answers
        if a is None:
            return None
        if a.empty == self.n:
            return f"all {self.n} tuned answers are empty"
        if a.empty * 2 > self.n:
            return f"{a.empty} of {self.n} tuned answers are empty"
        if a.distinct == 1 and self.n > 1:
            return f"all {self.n} tuned answers are the same text"
        return None

    def resolution(self) -> float:
        """What one item is worth on this task's score."""
        return 1.0 / self.n


class EvalComparison(Contract):
    adapter_sha256: str
    domain_task: str
    tasks: dict[str, TaskComparison]


class JudgeScores(Contract):
    """One model's rubric scores over the eval items (llmops.judge.summary.summarise_model)."""

    mean: float | None  # mean of per-item mean scores; None when no item was validly judged
    ci: Interval | None  # bootstrap CI of that mean
    pass_rate: Probability  # items whose mean >= judge.pass_threshold, over every item (invalid never passes)
    n: int = Field(ge=0)
    n_valid: int = Field(ge=0)
    repeat_var: float | None = Field(ge=0)  # mean within-item variance over repeats (judge.repeats > 1)


class JudgeRubric(Contract):
    rubric_sha256: str
    version: int
    tuned: JudgeScores
    base: JudgeScores
    delta: float | None  # tuned mean - base mean
    delta_ci: Interval | None  # paired bootstrap over the items valid for both


class JudgeCalibration(Contract):
    """Agreement with human scores and whether judge rules may bind (llmops.judge.calibration)."""

    n: int = Field(ge=0)
    n_valid: int = Field(ge=0)
    valid_share: Probability
    kappa: float | None = Field(ge=-1, le=1)
    exact: Probability
    adjacent: Probability
    min_kappa: float
    min_valid: int
    min_valid_share: Probability
    calibrated: bool
    reason: str


class JudgePair(Contract):
    model: str | None
    system_fingerprint: str | None
    n: int = Field(ge=1)


class JudgeProvenance(Contract):
    """What the provider said answered: more than one (model, fingerprint) pair = the model changed mid-run."""

    models: list[str]
    system_fingerprints: list[str]
    judgments_per_pair: list[JudgePair]
    changed: bool


class JudgeErrorCount(Contract):
    error: str
    message: str
    n: int = Field(ge=1)


class Tokens(Contract):
    prompt: int = Field(ge=0)
    completion: int = Field(ge=0)


class Serving(Contract):
    code_sha256: str
    libraries: dict[str, str | None]


class JudgeReport(Contract):
    """reports/judge.json (llmops.judge.stage.run)."""

    adapter_sha256: str
    judge_model: str
    provider: str
    judge_endpoint: str  # "local", or the remote URL without credentials
    judge_reported: JudgeProvenance
    serving: Serving
    repeats: int = Field(ge=1)
    items: int = Field(ge=1)  # eval items answered and judged per model (judge.limit may cut them)
    eval_items: int = Field(ge=1)  # eval items in the prepared eval set
    rubrics: dict[str, JudgeRubric]
    invalid_rate: Probability
    failure_rate: Probability
    errors: list[JudgeErrorCount]
    logprobs_fallback: bool
    logprobs_fallback_reason: str | None
    calls: int = Field(ge=0)
    attempts: int = Field(ge=0)
    retries: int = Field(ge=0)
    cache_hits: int = Field(ge=0)
    cache_hit_rate: Probability
    tokens: Tokens  # this run's calls
    cost_usd: float = Field(ge=0)
    results_tokens: Tokens  # what the judgments in the results took when they were made (cached or not)
    results_cost_usd: float = Field(ge=0)
    cache_pruned: int = Field(ge=0)
    cache_entries: int = Field(ge=0)
    answer_calls: int = Field(ge=0)
    answer_cache_hits: int = Field(ge=0)
    answer_failures: int = Field(ge=0)
    model_server_started: bool
    calibration: JudgeCalibration
    timing_s: dict[str, float]


class TokenStats(Contract):
    """Prompt + answer token counts of a split's kept examples."""

    p50: float
    p90: float
    p99: float
    max: int
    mean: float


class SplitStats(Contract):
    raw: int = Field(ge=0)
    duplicates_dropped: int = Field(ge=0)
    final: int = Field(ge=0)
    dropped_too_long: int = Field(ge=0)
    truncated: int = Field(ge=0)
    tokens: TokenStats | None  # None: no example kept
    labels: dict[str, int]


class LeakPair(Contract):
    train: str  # file:line
    eval: str
    similarity: float = Field(ge=0, le=1)


class Leakage(Contract):
    ngram: int = Field(ge=1)
    threshold: float
    max_similarity: float = Field(ge=0, le=1)
    most_similar: LeakPair | None
    pairs: list[LeakPair]


class DataStats(Contract):
    """reports/data.json (llmops.prepare.run)."""

    train: SplitStats
    eval: SplitStats
    leaked: int = Field(ge=0)  # training examples in at least one leaked pair
    leakage: Leakage
    labels: list[str]
    truncation_policy: str
    max_seq_len: int = Field(ge=1)


class TrainMetrics(Contract):
    """reports/train.json (llmops.train.run): the deterministic quality figures; timings are in train_perf.json."""

    loss_before: float
    loss_after: float
    loss_eval_examples: int = Field(ge=0)
    train_loss_mean: float
    train_loss_last: float | None
    train_loss_last_step: int | None
    steps: int = Field(ge=0)
    examples: int = Field(ge=0)
    tokens_seen: int = Field(ge=0)
    trainable_params: int = Field(ge=0)
    trainable_share: Probability


class TaskResult(Contract):
    metric: str
    filter: str
    score: float
    stderr: float | None  # lm-eval reports none for some metrics
    n: int = Field(ge=0)


class EvalResults(Contract):
    """reports/eval_base.json (llmops.evaluate.run)."""

    model: str  # "base" | "tuned"
    runtime_s: float = Field(ge=0)
    tasks: dict[str, TaskResult]


class TunedEvalResults(EvalResults):
    """reports/eval_tuned.json: the same plus which adapter was evaluated."""

    adapter_sha256: str


# How a gate rule compares observed with threshold (llmops.gate.OPS holds the functions).
Op = Literal[">=", ">", "<=", "<"]


class GateRule(Contract):
    rule: str
    metric: str
    observed: float | None
    threshold: float
    op: Op
    binding: bool
    passed: bool
    reason: str
    detail: str = ""  # the decision's statistics in words (n, what one item is worth, p-value)


class GateReport(Contract):
    verdict: Annotated[Verdict, Strict(False)]
    exit_code: int
    adapter_sha256: str | None
    rules: list[GateRule]
    errors: list[str]
    summary: str


class MlflowRun(Contract):
    """reports/mlflow_run.json (llmops.train.log_mlflow): the training run later stages log into. Not in CONTRACTS
    (it holds no metric, and dvc.yaml does not declare it one); tests/test_schemas.py checks the committed file."""

    run_id: str = Field(min_length=1)
    experiment_id: str
    tracking_uri: str  # credentials stripped (artifacts.safe_url)


class LabelChange(Contract):
    doc_id: str  # lm-eval's doc_id in the domain task
    line: int | None  # the item's line in paths.raw_eval (prepare's source_line), when the doc carries it
    evaluated: str  # the label the eval stage recorded
    deployed: str  # the label the checked form gave


class FormCheck(Contract):
    """One form of a registered version (the adapter on its bundled base, or the merged export) answering the
    domain task's held-out items, against the answers the eval stage recorded for the gated adapter."""

    form: Literal["adapter", "merged"]
    items: int = Field(ge=0)
    identical_answers: int = Field(ge=0)
    label_changes: list[LabelChange]
    max_first_token_logprob_diff: float = Field(
        ge=0
    )  # nats: |log p_evaluated(t) - log p_form(t)|, t = first greedy token
    passed: bool
    reasons: list[str]  # why it failed (empty when passed)
    runtime_s: float


class DeployCheck(Contract):
    """reports/deploy_check.json (llmops.deploy_check, written by `llmops deploy`). Not in CONTRACTS: deploy writes
    it, not a dvc.yaml stage; tests/test_deploy_check.py reads it through this contract."""

    task: str
    adapter_sha256: str
    max_label_changes: int = Field(ge=0)
    max_logprob_diff: float | None
    forms: list[FormCheck]
    passed: bool


class Lineage(Contract):
    """Where a deployed adapter came from (llmops.deploy.lineage): logged as lineage.json with the version, written
    into the model card and its tags."""

    git_sha: str
    git_dirty: bool | None  # None: not a git checkout
    params_sha256: str
    data_sha256: str
    adapter_sha256: str
    base_model: str
    base_revision: str | None
    base_weights_sha256: str | None
    base_identity: dict[str, Any]  # identity.json as the base stage wrote it (its keys depend on the source)
    dvc_outs_md5: dict[str, str | None]


Model = TypeVar("Model", bound=BaseModel)


def read(path: Path, model: type[Model]) -> Model:
    """The file validated against `model`; ContractError naming the file and each bad field otherwise."""
    if not path.is_file():
        raise ContractError(f"{path}: missing (the stage that writes it has not run)")
    try:
        # json.loads reads NaN/Infinity as floats; allow_inf_nan=False then names the field that holds one
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ContractError(f"{path}: malformed JSON ({exc})") from None
    return validate(data, model, str(path))


def validate(data: Any, model: type[Model], source: str) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ContractError(f"{source}: {problems(exc.errors())}") from None


# Every contracted file by name (tests/test_schemas.py checks each committed one and each example against it).
CONTRACTS: dict[str, type[BaseModel]] = {
    DATA: DataStats,
    TRAIN: TrainMetrics,
    EVAL_BASE: EvalResults,
    EVAL_TUNED: TunedEvalResults,
    EVAL_COMPARE: EvalComparison,
    JUDGE: JudgeReport,
    GATE: GateReport,
}


def write(path: Path, model: BaseModel) -> None:
    """Atomically write the model as JSON (the same bytes for the same content)."""
    write_json(path, model.model_dump(mode="json"))
