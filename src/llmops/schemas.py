"""Output contracts: the files one stage writes and a later one reads, as pydantic models.

Writers dump a model (`write(path, model)`), readers validate (`read(path, Model)`), so a field's name and
meaning live here once instead of in dotted-string lookups spread over the stages. No NaN or infinite
value validates anywhere (`allow_inf_nan=False`): a metric that is not a number is an error the reader
names, never a silent pass.

Used by: evaluate (writes eval_compare.json), gate (reads eval_compare.json and judge.json, writes
gate.json), report and deploy (read them).
"""

from __future__ import annotations

import json
import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmops.artifacts import write_json

# The file names, relative to paths.reports (dvc.yaml names the same files).
DATA = "data.json"
TRAIN = "train.json"
TRAIN_PERF = "train_perf.json"
EVAL_COMPARE = "eval_compare.json"
JUDGE = "judge.json"
JUDGE_ITEMS = "judge_items.jsonl"
GATE = "gate.json"
REPORT = "report.md"
MLFLOW_RUN = "mlflow_run.json"


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


class ContractError(ValueError):
    """A stage output that does not match its contract; the message names the file and the field."""


class Contract(BaseModel):
    # extra="forbid": a misspelt or foreign field is a finding, not something to ignore
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


Probability = Annotated[float, Field(ge=0, le=1)]
Interval = Annotated[list[float], Field(min_length=2, max_length=2)]


class Baseline(Contract):
    """Scores of input-blind answers on a domain task, from its gold labels."""

    labels: int = Field(ge=1)
    chance: Probability    # 1 / number of labels
    majority: Probability  # share of the most common label


class AnswerStats(Contract):
    """Generated answers of the tuned model (generative tasks): degenerate output shows here first."""

    empty: int = Field(ge=0)
    distinct: int = Field(ge=0)


class TaskComparison(Contract):
    """One task, base vs tuned over the same items (llmops.stats.compare plus kind and metric)."""

    kind: TaskKind
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
    lost: int | None = Field(ge=0)    # ... and only base got right
    p_value: Probability              # two-sided, for readers; the gate runs its own one-sided tests
    test: str
    baseline: Baseline | None = None        # domain tasks
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


class JudgeScores(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    mean: float | None = None
    n: int | None = None


class JudgeRubric(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    tuned: JudgeScores


class JudgeCalibration(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    calibrated: bool
    reason: str | None = None


class JudgeSummary(BaseModel):
    """The fields of reports/judge.json other stages rely on (the judge writes more; extra is kept)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    adapter_sha256: str
    calibration: JudgeCalibration
    rubrics: dict[str, JudgeRubric]
    invalid_rate: Probability
    failure_rate: Probability


class GateRule(Contract):
    rule: str
    metric: str
    observed: float | None
    threshold: float
    op: str
    binding: bool
    passed: bool
    reason: str
    detail: str = ""  # the decision's statistics in words (n, what one item is worth, p-value)


class GateReport(Contract):
    verdict: Verdict
    exit_code: int
    adapter_sha256: str | None
    rules: list[GateRule]
    errors: list[str]
    summary: str


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
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {_msg(e)}"
                             for e in exc.errors())
        raise ContractError(f"{source}: {problems}") from None


def _msg(error: dict) -> str:
    value = error.get("input")
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    return error["msg"]


def write(path: Path, model: BaseModel) -> None:
    """Atomically write the model as JSON (the same bytes for the same content)."""
    write_json(path, model.model_dump(mode="json"))
