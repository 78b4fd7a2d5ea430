# The two commands of the README. Each sets up what it needs first (idempotent, seconds when
# nothing changed): `make run` runs the whole pipeline locally, `make test` runs what CI runs.
# `make e2e` (root only) starts a real two-node Kubernetes cluster on this machine, builds the
# image on it and runs tests/e2e; it restores the host when done.
SHELL := /bin/bash
VENV := .venv/bin
RUN_ARGS ?=
PY_DIRS := jobs operator localcluster tests bench scripts charts/carstream/files
# What the end-to-end tests need of the bootstrap: what the tests need, spark-operator, the cluster.
E2E_STEPS := test spark-operator cluster

.PHONY: bootstrap bootstrap-run bootstrap-e2e run test e2e lint typecheck pytest bench test-spark-operator

# What the tests need: the Python environment, the jars, the upstream CRDs and the Go tools.
bootstrap:
	build/bootstrap test

# What a local run needs: the Python environment and the jars; with RUN_ARGS="--storage s3"
# also the S3 server (a Go build).
RUN_BOOTSTRAP := run $(if $(findstring --storage s3,$(RUN_ARGS)),s3-server)

bootstrap-run:
	build/bootstrap $(RUN_BOOTSTRAP)

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

# The real spark-operator controller submitting carstream's SparkApplications to the test API
# server (no pods): needs spark-operator's binary, an extra build; `make e2e` runs it too.
test-spark-operator: bootstrap
	build/bootstrap spark-operator
	$(VENV)/pytest -m spark_operator tests/spark_operator

bootstrap-e2e:
	build/bootstrap $(E2E_STEPS)

# A real two-node cluster on this machine (as root): images built, carstream installed with
# helm, the checks of tests/e2e; everything it started is stopped and the host restored.
e2e: bootstrap-e2e
	$(VENV)/pytest -m spark_operator tests/spark_operator
	$(VENV)/pytest tests/e2e

bench: bootstrap-run
	$(VENV)/python bench/run_all.py
