"""The one model loader: every stage and the server load the base model (and a LoRA adapter) through here.

The base stage pins the base in `paths.base_dir/identity.json` (built tiny model, converted GGUF, local folder or
hub id at a revision); `reference` turns that pin into what `from_pretrained` loads, re-verifying a local folder's bytes
first, so no stage can silently run on weights that changed after the pin.
A source is params.paths (or anything with `base_identity` and `base_dir`, e.g. a downloaded registry version)
or an already resolved (name_or_path, revision) pair, as the server's child process receives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from llmops.artifacts import read_json, sha256_file
from llmops.errors import StageError


class PinnedBase(Protocol):
    """Where a pinned base lives: params.paths, or a downloaded registry version (llmops.registry.load_version)."""

    base_identity: Path
    base_dir: Path


# What the loaders accept: a pinned base, a resolved (name_or_path, revision) pair, or a plain folder / hub id
ModelSource = PinnedBase | tuple[str, str | None] | str | Path


def manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """Every file of a local model folder (weights, config, tokenizer) with its size, mtime and sha256.
    A local folder is pinned by content, not by its config alone: overwritten weights must not pass."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):  # .cache/, .git/: not the model
            continue
        st = path.stat()
        out[rel.as_posix()] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}
    return out


def verify_local(ident: dict[str, Any], folder: Path | None = None) -> None:
    """The local base folder (`folder`, else the pinned path) still holds the bytes the base stage pinned
    (StageError otherwise). Files whose size and mtime are unchanged are trusted (as DVC does); the others are
    re-hashed. identity.json itself is the pin, not a pinned file."""
    folder, pinned = Path(folder or ident["path"]), ident.get("files")
    if not pinned:
        return  # an identity.json written before weights were pinned: nothing to compare with
    rerun = "the results after it would describe weights that no longer exist; rerun: dvc repro -f base"
    present = (
        {
            p.relative_to(folder).as_posix()
            for p in folder.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
            and not (ident.get("source") == "gguf" and p.name == "identity.json" and p.parent == folder)
        }
        if folder.is_dir()
        else set()
    )
    changed = sorted(set(pinned) ^ present)
    for rel in sorted(set(pinned) & present):
        st, want = (folder / rel).stat(), pinned[rel]
        if st.st_size != want["size"] or (
            st.st_mtime_ns != want["mtime_ns"] and sha256_file(folder / rel) != want["sha256"]
        ):
            changed.append(rel)
    if changed:
        raise StageError(
            f"base.model {folder}: {', '.join(changed[:5])} changed since the base stage pinned "
            f"it (added, removed or different bytes); {rerun}"
        )


def identity(paths: PinnedBase) -> dict[str, Any]:
    if not paths.base_identity.is_file():
        raise StageError(f"{paths.base_identity}: missing; run the base stage first (dvc repro base)")
    return read_json(paths.base_identity)


def model_reference(paths: PinnedBase) -> tuple[str, str | None]:
    """(name_or_path, revision) that from_pretrained should load for the pinned base."""
    ident = identity(paths)
    if ident["source"] == "local":
        verify_local(ident)
    elif ident["source"] == "gguf":  # converted into base_dir by the base stage: pinned by every file's hash
        verify_local(ident, paths.base_dir)
    in_base_dir = ident["source"] in ("built", "gguf")
    return (str(paths.base_dir) if in_base_dir else ident["path"]), ident.get("revision")


def reference(source: ModelSource) -> tuple[str, str | None]:
    """A source (see the module docstring) as (name_or_path, revision); a bare str/Path has no revision."""
    if hasattr(source, "base_identity"):
        return model_reference(source)
    if isinstance(source, tuple):
        return source
    return str(source), None


def load_tokenizer(source: ModelSource):
    from transformers import AutoTokenizer

    name, revision = reference(source)
    tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
    if tokenizer.pad_token is None:  # many base models ship none; padding must not be a real token id
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(source: ModelSource, dtype: Any = None, adapter: Path | str | None = None, device: str | None = None):
    """The base model (dtype "auto" unless given), moved to `device` if given, with the LoRA adapter folder
    applied unmerged on top if given (exactly the files train wrote)."""
    from transformers import AutoModelForCausalLM

    name, revision = reference(source)
    model = AutoModelForCausalLM.from_pretrained(name, revision=revision, dtype=dtype or "auto")
    if device is not None:
        model = model.to(device)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    return model


def chat_texts(tokenizer, messages: list[dict[str, str]]) -> tuple[str, str]:
    """(the prompt, the whole conversation) rendered with the tokenizer's chat template: the prompt is every turn but
    the last (the answer) plus the generation prompt, as the model sees it before answering. Training masks the
    prompt's tokens and prepare counts both lengths."""
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    return prompt, tokenizer.apply_chat_template(messages, tokenize=False)
