"""The OpenAI chat-completions request our server accepts, as one pydantic model, and the API's error shape.

Used by llmops.serve (the HTTP side) and llmops.serve_engine. Every request body is validated by `ChatRequest`: a bad
value is HTTP 400 in the OpenAI error shape naming the field (`error.param`), never a 500; fields we do not know are
ignored (the openai client sends `user`, `stream: false`, ...). Limits follow OpenAI: temperature 0-2, top_p (0, 1],
seed int64, at most 4 stop strings, top_logprobs 0-20 (and only with logprobs: true).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmops.errors import field_path

BASE_ID, TUNED_ID = "base", "tuned"
API_KEY_ENV = "LLMOPS_SERVE_API_KEY"  # when set, every path but /health needs `Authorization: Bearer <key>`
DEFAULT_MAX_TOKENS = 256
MAX_STOP, MAX_STOP_CHARS = 4, 256  # OpenAI's limits on stop sequences (count); length: ours, generous
INT64 = 2**63


class APIError(Exception):
    """An OpenAI-shaped error response: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def _content_text(content: Any) -> str:
    """OpenAI message content: a string or a list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    raise ValueError(
        'content must be a string or a list of {"type": "text", "text": <string>} parts (this server is text-only)'
    )


def _stop_list(stop: Any) -> list[str]:
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise ValueError("stop must be a string or a list of strings")
    if len(stop) > MAX_STOP:
        raise ValueError(f"at most {MAX_STOP} stop sequences, got {len(stop)}")
    if any(len(s) > MAX_STOP_CHARS for s in stop):
        raise ValueError(f"each stop sequence must be at most {MAX_STOP_CHARS} characters")
    return stop


def _strict(kind: type, **limits: Any) -> Any:
    """An optional JSON number/bool: strict (no "0.5" strings, no 5.0 for ints, no true for 1), finite."""
    return Annotated[kind | None, Field(strict=True, **limits)]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Annotated[Any, AfterValidator(_content_text)]


class ChatRequest(BaseModel):
    """The /v1/chat/completions body. Unknown fields are ignored, as OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="ignore")

    model: Annotated[str, Field(strict=True)]
    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: _strict(int, ge=1, lt=INT64) = None
    max_completion_tokens: _strict(int, ge=1, lt=INT64) = None
    temperature: _strict(float, ge=0, le=2, allow_inf_nan=False) = None
    top_p: _strict(float, gt=0, le=1, allow_inf_nan=False) = None
    seed: _strict(int, ge=-INT64, lt=INT64) = None
    stop: Annotated[Any, AfterValidator(_stop_list), Field(validate_default=True)] = None  # -> list[str]
    n: _strict(int, ge=1, le=1) = None
    stream: _strict(bool) = None
    logprobs: _strict(bool) = None
    top_logprobs: _strict(int, ge=0, le=20) = None

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("stream=true is not supported by this server")
        return v

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, v: int | None, info) -> int | None:
        if v is not None and info.data.get("logprobs") is not True:
            raise ValueError("top_logprobs needs logprobs: true")
        return v


def validation_error(exc: ValidationError) -> APIError:
    """The first problem, named: a client fixes one field at a time, and the message stays short."""
    err = exc.errors(include_url=False)[0]
    param = field_path(err["loc"])
    kind = err["type"]
    code = (
        "missing_required_parameter"
        if kind == "missing"
        else "invalid_type"
        if kind.endswith(("_type", "_parsing"))
        else "invalid_value"
    )
    msg = err["msg"].removeprefix("Value error, ")
    shown = repr(err.get("input"))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    where = f"{param}: " if param else "body: "
    return APIError(400, f"{where}{msg}" + ("" if kind == "missing" else f" (got {shown})"), param, code)
