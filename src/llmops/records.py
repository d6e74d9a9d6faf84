"""The raw labelled records the prepare stage accepts, as pydantic models (one JSON object per line):

  {"input": "...", "output": "..."}                                  PairRecord
  {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}   ChatRecord

Used by llmops.prepare, which turns the first problem of a record into a DataError naming file, line and field
(`messages[1].content`). Text must be a string with something visible in it and no control character but \\n and
\\t; unknown keys (an id, metadata) are ignored. The conversation's own rules (the answer last, a user turn before
it) and the label live in prepare, which knows where to point.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

ROLES = ("assistant", "system", "user")
ALLOWED_CONTROLS = {"\n", "\t"}
# Letters and symbols that render as blank space (Hangul fillers, braille blank): not visible text either.
BLANK_LOOKING = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"}


def visible(char: str) -> bool:
    return unicodedata.category(char)[0] in "LNPS" and char not in BLANK_LOOKING


def check_text(value: Any) -> str:
    """A string a person wrote: valid Unicode, no control characters but \\n and \\t, something visible."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__}")
    for i, char in enumerate(value):
        category = unicodedata.category(char)
        if category == "Cs":
            raise ValueError(f"contains a lone surrogate U+{ord(char):04X} at character {i} (not valid Unicode)")
        if category == "Cc" and char not in ALLOWED_CONTROLS:
            raise ValueError(
                f"contains control character U+{ord(char):04X} at character {i} (only \\n and \\t are allowed)"
            )
    if not any(visible(c) for c in value):
        raise ValueError("is empty: no visible character (only whitespace, zero-width or format characters)")
    return value


def check_role(value: Any) -> str:
    if value not in ROLES:
        raise ValueError(f"must be one of {list(ROLES)}, got {value!r}")
    return value


def check_object(value: Any) -> Any:
    if not isinstance(value, dict):
        raise ValueError("must be an object with role and content")
    return value


def check_turns(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of {role, content}")
    return value


# Any, then our own check: the message says what was wrong ("must be a string, got int"), not pydantic's type name
Text = Annotated[Any, AfterValidator(check_text)]


class Turn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Annotated[Any, AfterValidator(check_role)] = Field(default=None, validate_default=True)
    content: Text = Field(default=None, validate_default=True)


class ChatRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    messages: Annotated[list[Annotated[Turn, BeforeValidator(check_object)]], BeforeValidator(check_turns)]


class PairRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: Text
    output: Text
