# The two commands of the README. Each sets up what it needs first (idempotent, seconds when
# nothing changed): `make run` runs the whole pipeline locally, `make test` runs what CI runs.
SHELL := /bin/bash
VENV := .venv/bin
RUN_ARGS ?=
PY_DIRS := jobs operator tests bench scripts charts/carstream/files

.PHONY: bootstrap bootstrap-run run test lint typecheck pytest bench

# What the tests need: the Python environment, the jars, the upstream CRDs and the Go tools.
bootstrap:
	build/bootstrap test

# What a local run needs: the Python environment and the jars, nothing else.
bootstrap-run:
	build/bootstrap run

run: bootstrap-run
	$(VENV)/carstream run $(RUN_ARGS)

lint:
	$(VENV)/ruff check $(PY_DIRS)
	$(VENV)/ruff format --check $(PY_DIRS)

typecheck:
	$(VENV)/mypy

pytest:
	$(VENV)/pytest

test: bootstrap lint typecheck pytest

bench: bootstrap-run
	$(VENV)/python bench/run_all.py
