# Task runner. The README's quick start is exactly `make run` and `make test`;
# each calls the idempotent set-up step first.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: setup run test test-slow test-cluster lint bench clean
setup:
	@./scripts/setup_env.sh

run: setup
	$(PY) pipelines/sweep.py --space search_spaces/smoke.yaml

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

# two-node Ray cluster + MLflow server on this machine, ray job submit (docs/cluster.md)
test-cluster: setup
	$(PY) -m pytest -q -s -m cluster tests/test_cluster.py

lint: setup
	$(PY) -m ruff check pgd pipelines tests bench

bench: setup
	$(PY) bench/pgw.py
	$(PY) bench/distill_step.py
