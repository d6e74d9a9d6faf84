"""MLflow helpers shared by the stages: where the store is and which run a result belongs to.

MLflow mirrors what DVC tracks; the files under reports/ stay the source of truth. The default store is
`sqlite:///mlflow.db` in the repository (git-ignored); params.yaml `tracking.uri` overrides it and the
MLFLOW_TRACKING_URI env var overrides both. `train` opens the run and records its id in
reports/mlflow_run.json, later stages log into that same run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llmops import schemas

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MLFLOW_BY_ENV = "LLMOPS_TRAIN_MLFLOW"  # "launcher": llmops.launcher logs the training run, the trainer does not


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else params.yaml `tracking.uri`, else the repository's sqlite store."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    from llmops.config import PARAMS_FILE, load_params

    return (load_params(PARAMS_FILE).tracking.uri if PARAMS_FILE.is_file() else None) or DEFAULT_TRACKING_URI


def mlflow():
    """Import mlflow pointed at our store (imported here, lazily: only stages that log pay its import)."""
    import logging

    import mlflow as _mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)  # schema-migration chatter on first use
    _mlflow.set_tracking_uri(tracking_uri())
    return _mlflow


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): obj}


def log_to_training_run(reports: Path, metrics: dict[str, Any], prefix: str) -> str | None:
    """Log numeric `metrics` into the MLflow run of the training they describe; returns its id."""
    run_file = reports / schemas.MLFLOW_RUN
    if not run_file.is_file():
        return None
    run_id = schemas.read(run_file, schemas.MlflowRun).run_id
    ml = mlflow()
    numeric = {
        f"{prefix}.{k}": float(v)
        for k, v in flatten(metrics).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    client = ml.tracking.MlflowClient()
    try:
        client.get_run(run_id)
    except Exception:  # noqa: BLE001 - the run lives in another store (e.g. restored from DVC cache elsewhere)
        return None
    for key, value in numeric.items():
        client.log_metric(run_id, key.replace(",", "_"), value)
    return run_id
