"""Rubrics (prompts/rubrics/<name>.yaml), the shared prompt template (judge.jinja) and rendering.

A rubric's hash is taken over what the judge is actually shown: the *parsed* rubric (so a comment or
formatting edit of the YAML keeps every cached judgment) and the template without its `{# #}` comments.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator

from llmops.config import Strict
from llmops.errors import ConfigError, problems
from llmops.judge import hardening

RUBRIC_DIR = "rubrics"
TEMPLATE_FILE = "judge.jinja"


class Scale(Strict):
    min: int = 1
    max: int = 5

    @model_validator(mode="after")
    def _ordered(self) -> Scale:
        if self.max <= self.min:
            raise ValueError(f"max ({self.max}) must be greater than min ({self.min})")
        return self


class RubricSpec(Strict):
    name: str
    version: int | str
    description: str
    criteria: list[str]
    use_reference: bool = False
    scale: Scale = Scale()
    levels: dict[int, str]

    @model_validator(mode="after")
    def _every_level_anchored(self) -> RubricSpec:
        want = set(range(self.scale.min, self.scale.max + 1))
        if set(self.levels) != want:
            raise ValueError(f"levels must describe exactly the scores {sorted(want)}, got {sorted(self.levels)}")
        if not self.criteria:
            raise ValueError("criteria: at least one")
        return self


@dataclass(frozen=True)
class Rubric:
    spec: RubricSpec
    sha256: str  # of the parsed rubric + the template's non-comment tokens: only meaningful edits re-judge
    template: Any = field(repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def valid_score(self, value: int) -> bool:
        return self.spec.scale.min <= value <= self.spec.scale.max


def _environment():
    import jinja2

    return jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


def rubric_hash(spec: RubricSpec, template_source: str) -> str:
    """sha256 over the parsed rubric (canonical JSON) and the template's tokens minus comments."""
    tokens = [
        (kind, value)
        for _, kind, value in _environment().lex(template_source)
        if kind not in ("comment_begin", "comment", "comment_end")
    ]
    payload = json.dumps({"rubric": spec.model_dump(mode="json"), "template": tokens}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def load_rubric(folder: Path, name: str) -> Rubric:
    import jinja2
    import yaml

    path, template_path = folder / f"{name}.yaml", folder / TEMPLATE_FILE
    if not path.is_file():
        raise ConfigError(f"judge.rubrics: {path} not found")
    if not template_path.is_file():
        raise ConfigError(f"{template_path}: judge prompt template not found")
    try:
        spec = RubricSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(f"{path}: {problems(exc.errors())}") from None
    if spec.name != name:
        raise ConfigError(f"{path}: name {spec.name!r} must match the file name {name!r}")
    source = template_path.read_text(encoding="utf-8")
    try:
        template = _environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{template_path}:{exc.lineno}: {exc.message}") from None
    return Rubric(spec, rubric_hash(spec, source), template)


def render(rubric: Rubric, prompt: str, answer: str, reference: str | None) -> list[dict[str, str]]:
    """The judge's messages. Every untrusted field (input, reference, answer) is delimited and neutralised."""
    use_reference = rubric.spec.use_reference and reference is not None
    content = rubric.template.render(
        rubric=rubric.spec.model_dump(),
        input=hardening.delimit("input", prompt),
        reference=hardening.delimit("reference", str(reference)) if use_reference else None,
        answer=hardening.delimit("answer", answer),
    )
    return [{"role": "user", "content": content.strip() + "\n"}]
