# The two commands of the README. Each sets up what it needs first (idempotent, seconds when
# nothing changed): `make run` runs the whole pipeline locally, `make test` runs what CI runs.
SHELL := /bin/bash
VENV := .venv/bin
RUN_ARGS ?=
PY_DIRS := jobs operator tests bench scripts charts/carstream/files

.PHONY: bootstrap bootstrap-run run test lint typecheck pytest bench test-spark-operator

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

# The real spark-operator controller submitting carstream's SparkApplications (not part of
# `make test`: its binary is an extra 3.5-minute build).
test-spark-operator: bootstrap
	build/bootstrap spark-operator
	$(VENV)/pytest -m spark_operator tests/spark_operator

bench: bootstrap-run
	$(VENV)/python bench/run_all.py
