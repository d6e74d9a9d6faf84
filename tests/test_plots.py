"""`make exps` and `llmops plots` on a real (tiny) DVC repo: two `dvc exp run -S` experiments, a CSV plot."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, offline_env

pytestmark = pytest.mark.slow  # a real git+DVC repo with two experiments: ~70 s on 2 cores

FIT = """
import json, os, yaml
p = yaml.safe_load(open("params.yaml"))["train"]
lr, epochs = p["learning_rate"], p["epochs"]
os.makedirs("reports", exist_ok=True)
with open("reports/train_loss.csv", "w") as f:
    f.write("step,loss\\n" + "".join(f"{s},{2.0 / (1 + lr * s * epochs):.4f}\\n" for s in range(1, 21)))
tasks = {"dom": {"tuned": round(0.2 + lr * epochs, 4), "ratio": 3.0, "delta": 0.1},
         "gen": {"tuned": 0.9, "ratio": round(1 - lr / 10, 4), "delta": -lr}}
json.dump({"tasks": tasks, "runtime_s": lr * epochs}, open("reports/eval_compare.json", "w"))
json.dump({"verdict": "pass" if lr < 0.2 else "fail", "exit_code": 0}, open("reports/gate.json", "w"))
json.dump({"train": {"final": 60 + epochs}}, open("reports/data.json", "w"))  # a metric named like a param
"""

PARAMS = {
    "train": {"learning_rate": 0.1, "epochs": 2, "seed": 0},
    "eval": {"domain_tasks": ["dom"], "regression_tasks": ["gen"]},
    "paths": {"reports": "reports"},
}

DVC_YAML = {
    "stages": {
        "fit": {
            "cmd": "python fit.py",
            "deps": ["fit.py"],
            "params": ["train"],
            "metrics": [{f"reports/{m}.json": {"cache": False}} for m in ("eval_compare", "gate", "data")],
            "plots": [{"reports/train_loss.csv": {"cache": False, "x": "step", "y": "loss"}}],
        }
    }
}


def sh(repo: Path, *cmd: str, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=repo, env=offline_env(repo, **env), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def exp_repo(tmp_path_factory) -> Path:
    """A git+DVC repo with a baseline commit and two experiments: lr03 (learning_rate) and ep4 (epochs)."""
    repo = tmp_path_factory.mktemp("exps")
    (repo / "fit.py").write_text(FIT)
    (repo / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "repro", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "baseline")
    for name, change in (("lr03", "train.learning_rate=0.3"), ("ep4", "train.epochs=4")):
        sh(repo, "dvc", "exp", "run", "-q", "-n", name, "-S", change)
        sh(repo, "git", "checkout", "-q", "--", ".")  # exp run leaves its params in the workspace
    return repo


def test_make_exps_keeps_decision_metrics_and_changed_params_only(exp_repo):
    proc = sh(exp_repo, "make", "-s", "-f", str(ROOT / "Makefile"), "exps", "ARGS=--csv")
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert list(rows[0]) == [
        "Experiment",
        "tasks.dom.tuned",
        "tasks.gen.ratio",
        "verdict",
        "train.learning_rate",
        "train.epochs",
    ]  # not seed, runtime, train.final, deps
    by_name = {row["Experiment"]: row for row in rows}
    assert by_name["lr03"]["verdict"] == "fail" and by_name["lr03"]["train.learning_rate"] == "0.3"
    assert by_name["ep4"]["verdict"] == "pass" and by_name["ep4"]["train.epochs"] == "4"
    assert by_name["ep4"]["tasks.dom.tuned"] == "0.6"


def test_make_exps_table_fits_80_columns(exp_repo):
    """Issue #26: one screen is 80 columns, even when the terminal is wider."""
    out = sh(exp_repo, "make", "-s", "-f", str(ROOT / "Makefile"), "exps", COLUMNS="200").stdout
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80, out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["lr03"][1:] == ["fail", "0.800", "0.900", "2", "0.3"], out  # verdict, tuned scores, changed params
    assert rows["ep4"][1:] == ["pass", "0.600", "0.900", "4", "0.1"], out
    assert "seed" not in out and "epochs" in out and "learning rate" in out  # only the params that differ


def coloured(png: Path) -> list[tuple[int, int, int]]:
    """Saturated pixels: the data series (axes, text and grid are grey or black). Pillow comes with mlflow
    (via matplotlib); the PNG itself is written by vl-convert, not by Pillow."""
    from PIL import Image

    with Image.open(png) as image:
        assert image.format == "PNG"
        return [
            (r, g, b)
            for r, g, b, a in image.convert("RGBA").get_flattened_data()
            if a > 200 and max(r, g, b) - min(r, g, b) > 80
        ]


def test_plots_render_offline_to_png(exp_repo):
    proc = sh(exp_repo, "llmops", "plots")
    result = json.loads(proc.stdout)
    png = exp_repo / "reports/plots/reports_train_loss.png"
    assert (
        result["plots"]
        == [
            {
                "plot": "reports/train_loss.csv",
                "revisions": "workspace",
                "file": str(Path("reports/plots/reports_train_loss.png")),
            }
        ]
        and result["errors"] == []
    )
    from PIL import Image

    with Image.open(png) as image:
        assert image.width > 500 and image.height > 500  # DVC's 300x300 spec at scale 2, plus axes and legend
    assert len(coloured(png)) > 500  # the loss line (DVC's purple), not an empty frame
    for generated in ("reports/plots/reports_train_loss.png", "dvc_plots/index.html"):  # this repo ignores both
        assert subprocess.run(["git", "check-ignore", "-q", generated], cwd=ROOT).returncode == 0, generated


def test_plots_diff_draws_every_revision(exp_repo, tmp_path):
    proc = sh(exp_repo, "llmops", "plots", "HEAD", "lr03", "--out", str(tmp_path / "diff"))
    (plot,) = json.loads(proc.stdout)["plots"]
    assert plot["revisions"] == "HEAD,lr03"
    pixels = coloured(Path(plot["file"]))
    purple, cyan = sum(r > g for r, g, _ in pixels), sum(g > r for r, g, _ in pixels)  # DVC's first two colours
    assert purple > 500 and cyan > 500  # two lines, one per revision


def test_plots_without_plots_is_one_line_error(tmp_path):
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "dvc", "init", "-q")
    proc = subprocess.run(
        ["llmops", "plots"], cwd=tmp_path, env=offline_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1 and "no plot to render" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "reports/plots").exists()


def test_the_repos_bar_plots_colour_base_tuned_and_revisions_apart_and_print_zeros(tmp_path):
    """Issue #26: base and tuned in one colour, the experiment never against the baseline, an all-zero chart
    blank. The repo's own template (configs/plots/bars_by_model.json) and plot definition, on a toy repo."""
    plot = next(
        p
        for p in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["eval_tuned"]["plots"]
        if "eval_tasks.csv" in next(iter(p))
    )
    spec = dict(next(iter(plot.values())))
    (tmp_path / "configs/plots").mkdir(parents=True)
    (tmp_path / spec["template"]).write_text((ROOT / spec["template"]).read_text())
    stage = {"cmd": "python make.py", "deps": ["make.py"], "plots": [{"reports/eval_tasks.csv": spec}]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"scores": stage}}))
    (tmp_path / "make.py").write_text(
        "import os, sys\nos.makedirs('reports', exist_ok=True)\nv = sys.argv[1:] or ['0.0', '0.0']\n"
        "open('reports/eval_tasks.csv', 'w').write('task,model,score\\n'\n"
        "    f'gen,base,0.0\\ngen,tuned,{v[0]}\\nmc,base,0.25\\nmc,tuned,{v[1]}\\n')\n"
    )
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "dvc", "init", "-q")
    sh(tmp_path, "dvc", "repro", "-q")
    sh(tmp_path, "git", "add", "-A")
    sh(tmp_path, "git", "commit", "-qm", "baseline: tuned scores 0")
    (tmp_path / "make.py").write_text(
        (tmp_path / "make.py").read_text().replace("or ['0.0', '0.0']", "or ['0.6', '0.5']")
    )
    sh(tmp_path, "dvc", "repro", "-q")
    shown = json.loads(sh(tmp_path, "dvc", "plots", "diff", "HEAD", "--json").stdout)
    (vega,) = shown["data"]["reports/eval_tasks.csv"]
    layers = vega["content"]["layer"]
    assert any(layer["mark"]["type"] == "text" for layer in layers if isinstance(layer["mark"], dict))  # 0.00 shows
    runs = {d["model"] + " @ " + d["rev"] for d in vega["content"]["data"]["values"]}
    assert runs == {"base @ HEAD", "tuned @ HEAD", "base @ workspace", "tuned @ workspace"}
    out = json.loads(sh(tmp_path, "llmops", "plots", "HEAD").stdout)["plots"]
    pixels = coloured(tmp_path / out[0]["file"])  # relative to the toy repo, never this checkout
    hues = {(r // 64, g // 64, b // 64) for r, g, b in pixels}
    assert len(hues) >= 3, hues  # one colour per model and revision (the baseline's tuned bars are zero-length)
