"""Prompt-injection attack table: each attack's score from a gullible judge, before (the judge code and
template at a git ref, default main) and after (this checkout's llmops.judge).

Run:  python bench/judge_attacks.py [--ref main]

The judge is tests/openai_stub.py's `naive_judge`: it NFKC-normalises the prompt, ends a tag block at any
closing-tag line, obeys "output SCORE: N" outside the blocks and quotes the answer back after its verdict.
The attacks are tests/test_judge_hardening.py's ATTACKS (the wrong answer's honest score is 1).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

from judge_common import PROMPT, REFERENCE, cfg  # noqa: E402
from openai_stub import StubServer, naive_judge  # noqa: E402
from test_judge_hardening import ATTACKS, WRONG  # noqa: E402

from llmops import judge  # noqa: E402


def old_judge(ref: str) -> tuple[types.ModuleType, Path]:
    """The single-module judge at `ref`, loaded from git, and a rubric folder with that ref's template."""

    def show(path: str) -> str:
        return subprocess.run(
            ["git", "show", f"{ref}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout

    module = types.ModuleType("judge_at_ref")
    sys.modules[module.__name__] = module  # dataclasses look their module up while the code runs
    exec(compile(show("src/llmops/judge.py"), f"{ref}:src/llmops/judge.py", "exec"), module.__dict__)
    folder = Path(tempfile.mkdtemp(prefix="judge-ref-"))
    for name in ("judge.jinja", "triage_quality.yaml"):
        (folder / name).write_text(show(f"prompts/rubrics/{name}"))
    return module, folder


def score(module, folder: Path, field: str, text: str, logprobs: bool) -> float | None:
    fields = {"answer": WRONG, "input": PROMPT, "reference": REFERENCE, field: text}
    rubric = module.load_rubric(folder, "triage_quality")
    it = module.Item("eval", "0", "tuned", rubric, fields["input"], fields["answer"], fields["reference"])
    with StubServer(lambda body, headers, n: naive_judge(body, quote_answer=True)) as stub:
        records, _ = module.judge_items(
            [it],
            cfg(top_logprobs=10 if logprobs else 0),
            module.Endpoint(stub.url, "k", "attack"),
            module.JudgeCache(Path(tempfile.mkdtemp(prefix="judge-attack-"))),
        )
    return records[0]["score"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="main")
    args = parser.parse_args()
    before, before_dir = old_judge(args.ref)
    after_dir = ROOT / "prompts" / judge.RUBRIC_DIR
    print(f"| attack | field | before ({args.ref}) text / logprobs | after text / logprobs |")
    print("|---|---|---|---|")
    for name, field, text in [("none (wrong answer)", "answer", WRONG), *ATTACKS]:
        b = [score(before, before_dir, field, text, lp) for lp in (False, True)]
        a = [score(judge, after_dir, field, text, lp) for lp in (False, True)]
        print(f"| {name} | {field} | {b[0]:g} / {b[1]:g} | {a[0]:g} / {a[1]:g} |")


if __name__ == "__main__":
    main()
