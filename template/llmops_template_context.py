"""Jinja extension (cookiecutter.json `_extensions`) telling the hooks which template is being rendered and why.

cookiecutter and cruft put this folder on sys.path to load it (cookiecutter's local-extension mechanism; cruft's
AltTemporaryDirectory does the same for its clone), so `__file__` is the template folder being rendered: the
user's checkout under plain cookiecutter, cruft's clone at the commit being rendered under `cruft create`,
`cruft update` (old and new commit, also with --template-path) and `cruft diff`. The hook copies the pipeline
from there instead of re-cloning the `_template` URL, which fails when that URL lacks the commit being rendered
(--template-path <newer copy>) or is unreachable.

The module name is specific to this template: a generic `local_extensions` could already sit in sys.modules from
another template rendered in the same process.
"""

import inspect
from pathlib import Path

from jinja2.ext import Extension

# `cruft update` and `cruft diff` render the template twice into temporary folders (the project's recorded
# commit and the new one) only to diff them; `cruft create`, `cruft link` and cookiecutter render for the user.
REGENERATING_MODULES = ("cruft._commands.update", "cruft._commands.diff")


def _cruft_regenerating() -> bool:
    """True while a function of cruft's update/diff modules is on the call stack of this (cruft's) process.

    Why the stack: cruft hands cookiecutter the same context for create and update (answers, `_template`,
    `_commit`; no `_repo_dir` or `_output_dir` either way), and the output folder of an update is an ordinary
    temporary directory, so neither the answers nor the paths tell the cases apart. The stack does, for the CLI
    and the Python API alike; pyproject.toml pins cruft, and tests/test_template.py checks that an update is
    quiet, so a cruft release that moves these modules fails a test instead of making updates noisy.
    """
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_globals.get("__name__") in REGENERATING_MODULES:
            return True
        frame = frame.f_back
    return False


class TemplateContext(Extension):
    def __init__(self, environment):
        super().__init__(environment)
        environment.globals["llmops_template_dir"] = str(Path(__file__).resolve().parent)
        environment.globals["llmops_regenerating"] = _cruft_regenerating()
