"""The `llmops` command: one subcommand per dvc.yaml stage, each a thin wrapper around `<module>.run`.

Run:  llmops --help          (dvc.yaml calls these; `train` is launched via accelerate, see dvc.yaml)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from llmops.errors import StageError
from llmops.runner import exit_now, run_stage

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])


@app.command()
def base() -> None:
    """Build (tiny) or pin (hub id / local path) the base model."""
    from llmops import base as stage

    run_stage(stage.run)


@app.command()
def prepare() -> None:
    """Validate and normalise the raw data; write data/prepared and reports/data.json."""
    from llmops import prepare as stage

    run_stage(stage.run)


@app.command()
def train() -> None:
    """Train the LoRA adapter in this process (dvc.yaml runs it under `accelerate launch`)."""
    from llmops import train as stage

    run_stage(stage.run)


@app.command("train-launch")
def train_launch(
    config_file: Path = typer.Option(..., "--config_file", help="accelerate config, e.g. configs/accelerate/cpu.yaml"),
) -> None:
    """What dvc.yaml runs: `accelerate launch --config_file CONFIG -m llmops.train` as one process group that
    stops when this command or its caller dies (no orphaned trainers)."""
    from llmops import launcher

    exit_now(run_stage(launcher.launch, config_file))  # MLflow's teardown is the last thing dvc would wait for


@app.command()
def serve(
    adapter: Path | None = typer.Option(None, help="LoRA adapter folder, served as model id 'tuned'"),
    model_uri: str | None = typer.Option(
        None, help="a registered version, e.g. models:/<name>@production: served from any folder, no params.yaml"
    ),
    host: str = typer.Option("127.0.0.1", help="bind address (keep loopback unless behind a proxy)"),
    port: int = typer.Option(8000, help="0 = any free port"),
    max_body_bytes: int | None = typer.Option(
        None, min=1, help="larger request bodies get 413 (default: LLMOPS_SERVE_MAX_BODY_BYTES or 1 MiB)"
    ),
) -> None:
    """OpenAI-compatible server: the pinned base as 'base' (+ the adapter as 'tuned').

    Set LLMOPS_SERVE_API_KEY to require 'Authorization: Bearer <key>' on /v1/* (never pass it as an option).
    With --model-uri: the registered version's base and adapter (MLFLOW_TRACKING_URI names the store).
    """
    from llmops import serve as stage

    if model_uri is None:
        run_stage(stage.run, adapter, host, port, max_body_bytes)
        return
    if adapter is not None:
        typer.secho("error: --adapter and --model-uri exclude each other (a version holds its adapter)", err=True)
        sys.exit(2)
    from llmops.registry import serve_registered

    try:
        serve_registered(model_uri, host, port, max_body_bytes)
    except StageError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(1)


@app.command()
def judge() -> None:
    """Judge tuned and base answers with the rubrics under prompts/rubrics; write reports/judge.json."""
    from llmops import judge as stage

    run_stage(stage.run)


@app.command()
def gate(
    no_fail: bool = typer.Option(False, "--no-fail", help="always exit 0 (the dvc.yaml stage); CI runs without it"),
) -> None:
    """Apply params.yaml gate rules; write reports/gate.json. Exit 0 pass, 1 fail, 2 could not judge."""
    from llmops import gate as stage
    from llmops.config import load_params
    from llmops.errors import ConfigError

    try:
        load_params()
    except ConfigError as exc:  # unreadable rules: the gate cannot judge (2), it never passes
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(0 if no_fail else 2)
    result = run_stage(stage.run, no_fail)
    typer.secho(f"gate {result['summary']}", err=True, fg="green" if result["exit_code"] == 0 else "red")
    sys.exit(0 if no_fail else result["exit_code"])


@app.command()
def report(
    base_ref: str | None = typer.Option(
        None, help="git ref to diff against (default: $LLMOPS_REPORT_BASE_REF, then params report.base_ref)"
    ),
    failed: str | None = typer.Option(
        None,
        help="CI step outcomes, e.g. 'repro=failure gate=skipped': "
        "write the failure report instead (needs no valid params)",
    ),
    log: Path | None = typer.Option(None, help="with --failed: the failed step's log (dvc repro output)"),
) -> None:
    """Write reports/report.md: gate table, per-task results, DVC params/metrics diffs, judge, data, runtime."""
    from llmops import report as stage

    if failed is not None:  # the pipeline broke: params.yaml itself may be what is broken
        from llmops.config import load_params

        try:
            reports = load_params().paths.reports
        except Exception:  # noqa: BLE001 - any config error: the default folder still gets the report
            reports = Path("reports")
        from llmops.ci_report import write_failure

        print(json.dumps(write_failure(reports, failed, log)))
        return
    result = run_stage(stage.run, base_ref)
    # the last thing `dvc repro` prints: what a person reads (the JSON above is for tools)
    typer.secho("\n".join(["", *result["summary"]]), err=True, bold=True)


@app.command()
def comment(
    repo: str = typer.Option(..., help="owner/name"),
    pr: int = typer.Option(..., help="pull request number"),
    file: Path = typer.Option(Path("reports/report.md"), help="Markdown body"),
) -> None:
    """Create or update the sticky PR comment (token: GITHUB_TOKEN; API: GITHUB_API_URL). GitHub refusing (403 for
    a read-only token) is a warning, exit 0; a bad --repo or a missing file is exit 1."""
    from llmops.github import main

    sys.exit(main(["--repo", repo, "--pr", str(pr), "--file", str(file)]))


@app.command()
def deploy(
    version: str | None = typer.Option(
        None,
        "--version",
        help="redeploy this registered version (smoke-tested again) instead of registering models/adapter",
    ),
) -> None:
    """Register the gated adapter (re-checking the gate rules) in the MLflow registry, smoke-test it, move the alias."""
    from llmops import deploy as stage

    if version is not None:  # `--version ""` is a mistake, never a silent fresh deploy
        run_stage(stage.redeploy, version)
    else:
        run_stage(stage.run)


@app.command()
def export() -> None:
    """Merge the adapter into its base (paths.merged_dir, a plain HF folder) and check it answers as evaluated."""
    from llmops import export as stage

    run_stage(stage.run)


@app.command("deploy-check")
def deploy_check(
    model_uri: str = typer.Option(..., help="the registered version to check, e.g. models:/<name>@production"),
) -> None:
    """Download a registered version into an empty folder; check it answers the held-out domain items as this repo's
    eval_tuned recorded (reports/deploy_check.json); exit 1 if it does not."""
    from llmops import verify

    result = run_stage(verify.check_registered, model_uri)
    sys.exit(0 if result["passed"] else 1)


@app.command()
def rollback() -> None:
    """Move the registry alias back to the version that held it before the last deploy."""
    from llmops import deploy as stage

    run_stage(stage.rollback)


@app.command("eval-base")
def eval_base() -> None:
    """lm-eval on the base model: reports/eval_base.json and its per-sample logs."""
    from llmops import evaluate as stage

    run_stage(stage.run, "base")


@app.command("eval-tuned")
def eval_tuned() -> None:
    """lm-eval on base + adapter, paired against eval_base: reports/eval_tuned.json, eval_compare.json."""
    from llmops import evaluate as stage

    run_stage(stage.run, "tuned")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exps(ctx: typer.Context) -> None:
    """Compare experiments on one screen: gate verdict, domain scores, regression ratios, changed params."""
    from llmops import exps as view

    try:
        sys.exit(view.run(ctx.args))
    except StageError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(1)


@app.command()
def plots(
    revs: list[str] | None = typer.Argument(
        None, help="git revisions to compare with the workspace (dvc plots diff); none = the workspace (dvc plots show)"
    ),
    out: Path | None = typer.Option(None, help="PNG folder (default: <params paths.reports>/plots)"),
) -> None:
    """Render every DVC plot to PNG offline (the HTML of `dvc plots show` loads Vega from a CDN)."""
    from llmops import plots as view

    try:
        result = view.run(revs or [], out)
    except StageError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(1)
    print(json.dumps(result, indent=2, sort_keys=True))


@app.command()
def profile(
    name: str = typer.Argument(..., help="profiles/<name>.yaml, e.g. smollm2"),
    run: bool = typer.Option(False, "--run", help="run the experiment (dvc exp run) instead of printing it"),
) -> None:
    """A named set of params overrides as one DVC experiment: print (or --run) its `dvc exp run` command."""
    import shlex
    import subprocess

    from llmops import profiles

    try:
        cmd = profiles.exp_run_command(name, profiles.load(name))
    except StageError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(2)
    print(shlex.join(cmd), flush=True)
    if run:
        sys.exit(subprocess.run(cmd, check=False).returncode)


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="llmops")


if __name__ == "__main__":
    sys.exit(main())
