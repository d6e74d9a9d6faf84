"""The registered version's format: what `llmops deploy` uploads, and how anyone loads or serves it again.

Run:  MLFLOW_TRACKING_URI=<store> llmops serve --model-uri models:/<name>@production   (serve_registered: OpenAI API)
      MLFLOW_TRACKING_URI=<store> mlflow models serve -m models:/<name>@production --env-manager local   (pyfunc)

One MLflow run artifact folder `model/`, self-sufficient (no repository, no params.yaml):
    adapter/              the LoRA adapter; adapter_config.json names the base as below; README.md = the model card
    base/identity.json    the base's identity (hub id + pinned revision, or the built/local base's hashes)
    base/*                for a built (tiny), converted (GGUF) or local base: the weights and tokenizer themselves
    merged/               with deploy.merged: base + adapter merged (llmops export), checked before staging
    llmops_model.json     the manifest: which folder is what, and the hashes a download must match
    MLmodel, code/, requirements.txt, python_env.yaml
                          the same folder as an MLflow pyfunc model (llmops.pyfunc): `mlflow models serve` serves it
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

from llmops.artifacts import read_json, sha256_tree
from llmops.config import Params
from llmops.errors import StageError
from llmops.tracking import mlflow

MANIFEST = "llmops_model.json"


def load_version(version_dir: Path) -> SimpleNamespace:
    """What a downloaded registry version serves from: base (path or hub id + revision) and the adapter.

    Needs nothing but the folder (and, for a hub base, the hub or its cache): no repo, no params.yaml."""
    manifest = read_json(version_dir / MANIFEST)
    base_dir = version_dir / manifest["base"]["dir"]
    merged = manifest.get("merged")
    return SimpleNamespace(
        base_identity=base_dir / "identity.json",
        base_dir=base_dir,
        adapter_dir=version_dir / manifest["adapter"]["dir"],
        merged_dir=version_dir / merged["dir"] if merged else None,
        manifest=manifest,
    )


def stage_version(params: Params, card: str, dest: Path) -> Path:
    """The registered folder: adapter (card as README.md, config naming the base), base, manifest."""
    root = dest / "model"
    staged = root / "adapter"
    shutil.copytree(params.paths.adapter_dir, staged)
    (staged / "README.md").write_text(card, encoding="utf-8")
    (root / "README.md").write_text(card, encoding="utf-8")
    identity = read_json(params.paths.base_identity)  # plain JSON: keys depend on the source (see _base_identity)
    base = root / "base"
    if identity.get("source") == "hub":  # the hub pins it: id + commit, no weights copied
        base.mkdir(parents=True)
        base_entry = {"dir": "base", "source": "hub", "id": identity["path"], "revision": identity.get("revision")}
        base_ref, revision = identity["path"], identity.get("revision")
    else:  # built (tiny), converted (GGUF) or a local folder: the weights travel with the version, hashed
        src = params.paths.base_dir if identity.get("source") in ("built", "gguf") else Path(identity["path"])
        shutil.copytree(src, base, ignore=shutil.ignore_patterns("identity.json"))
        identity = {**identity, "source": "built", "path": "base"}  # served from the version's own folder
        base_entry = {"dir": "base", "source": "bundled"}
        base_ref, revision = "base", None
    (base / "identity.json").write_text(json.dumps(identity, indent=2, sort_keys=True), encoding="utf-8")
    if base_entry["source"] == "bundled":  # what a download must hash to (identity.json included)
        base_entry["sha256"] = sha256_tree(base)
    config_path = staged / "adapter_config.json"
    if config_path.is_file():  # peft reads the base from here (AutoPeftModel): a repo path means nothing elsewhere
        config = json.loads(config_path.read_text())
        config.update(base_model_name_or_path=base_ref, revision=revision)
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    if params.deploy.merged:  # llmops export wrote and checked it (run, below)
        shutil.copytree(params.paths.merged_dir, root / "merged")
        (root / "merged" / "README.md").write_text(card, encoding="utf-8")
    manifest = {
        "format": 1,
        "adapter": {"dir": "adapter", "sha256_gated": sha256_tree(params.paths.adapter_dir)},
        "base": base_entry,
        **({"merged": {"dir": "merged", "sha256": sha256_tree(root / "merged")}} if params.deploy.merged else {}),
        "load": "cd <this folder>; base = AutoModelForCausalLM.from_pretrained(base id or 'base', revision=...);"
        " PeftModel.from_pretrained(base, 'adapter')  (or llmops.registry.load_version)",
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    as_mlflow_model(root)
    return root


def as_mlflow_model(root: Path) -> None:
    """Make the version folder an MLflow pyfunc model in place (`mlflow models serve -m models:/<name>@<alias>`):
    MLmodel (python_function, loader_module llmops_pyfunc, the folder itself as data), the loader as
    code/llmops_pyfunc.py (llmops.pyfunc, self-contained) and the libraries it needs, pinned to what ran here."""
    from importlib import metadata

    import mlflow.pyfunc
    from mlflow.models import Model

    from llmops import pyfunc

    (root / "code").mkdir()
    shutil.copy2(pyfunc.__file__, root / "code" / "llmops_pyfunc.py")
    requirements = [f"{lib}=={metadata.version(lib)}" for lib in ("mlflow", "torch", "transformers", "peft")]
    (root / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    (root / "python_env.yaml").write_text(
        f"python: {platform.python_version()}\nbuild_dependencies:\n  - pip\ndependencies:\n  - -r requirements.txt\n",
        encoding="utf-8",
    )
    model = Model()
    mlflow.pyfunc.add_to_model(model, loader_module="llmops_pyfunc", code="code", python_env="python_env.yaml")
    model.save(str(root / "MLmodel"))


def download_version(ml, uri: str, empty: Path) -> Path:
    """`models:/...` into an empty folder; the folder that holds the manifest."""
    got = Path(ml.artifacts.download_artifacts(uri, dst_path=str(empty)))
    return got if (got / MANIFEST).is_file() else next(p.parent for p in got.rglob(MANIFEST))


def serve_registered(model_uri: str, host: str, port: int, max_body_bytes: int | None = None) -> None:
    """`llmops serve --model-uri models:/<name>@<alias>`: a registered version served from any folder, with no
    repository and no params.yaml (the tracking URI from MLFLOW_TRACKING_URI): downloaded into a temporary
    folder, its bundled (or hub-pinned) base as "base" and its adapter as "tuned", removed when the server stops."""
    from llmops.model import model_reference
    from llmops.serve import max_body_default, serve_forever

    with tempfile.TemporaryDirectory(prefix="llmops-version-") as tmp:
        try:
            version = load_version(download_version(mlflow(), model_uri, Path(tmp)))
        except Exception as exc:  # noqa: BLE001 - MLflow's errors for a bad URI, store or alias: one line
            raise StageError(f"{model_uri}: cannot download it ({type(exc).__name__}: {exc})") from None
        base_ref, revision = model_reference(version)
        serve_forever(
            base_ref, revision, version.adapter_dir, host, port, max_body_bytes=max_body_bytes or max_body_default()
        )
