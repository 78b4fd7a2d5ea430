# The two commands of the README. Each sets up what it needs first (idempotent, seconds when
# nothing changed): `make run` runs the whole pipeline locally, `make test` runs what CI runs.
# `make e2e` (root only) starts a real two-node Kubernetes cluster on this machine, builds the
# image on it and runs tests/e2e; it restores the host when done.
SHELL := /bin/bash
VENV := .venv/bin
RUN_ARGS ?=
PY_DIRS := jobs operator localcluster tests bench scripts charts/carstream/files
# What the end-to-end tests need of the bootstrap: the venv, the API server, etcd, the cluster.
E2E_STEPS := python kube etcd cluster

.PHONY: bootstrap bootstrap-e2e run test e2e lint typecheck pytest bench

bootstrap:
	build/bootstrap

run: bootstrap
	$(VENV)/carstream run $(RUN_ARGS)

lint:
	$(VENV)/ruff check $(PY_DIRS)
	$(VENV)/ruff format --check $(PY_DIRS)

typecheck:
	$(VENV)/mypy

pytest:
	$(VENV)/pytest

test: bootstrap lint typecheck pytest

bootstrap-e2e:
	build/bootstrap $(E2E_STEPS)

e2e: bootstrap-e2e
	$(VENV)/pytest tests/e2e

bench: bootstrap
	$(VENV)/python bench/run_all.py
