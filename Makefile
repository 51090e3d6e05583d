# visionmesh developer loop. `make run` and `make test` work from a fresh clone: both
# run `setup` (a .venv with every process's dependencies, the buf CLI from npm, and the
# generated gRPC stubs) when it is missing or out of date.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.visionmesh-setup
BUF := node_modules/.bin/buf
PROTOS := $(wildcard protos/visionmesh/v1/*.proto)
GEN_STAMP := sdk/visionmesh/v1/.generated
# pip's local mirrors print one warning per package they do not hold; hide that noise only.
PIP_QUIET := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: help setup proto run demo test lint bench clean

help:
	@echo "make run    start dataset_svc and the three trainers (Ctrl-C stops all)"
	@echo "make demo   shapes dataset -> upload -> train yolo11n live -> predict overlay (starts the mesh if needed)"
	@echo "make test   run the test suite"
	@echo "make lint   buf lint + buf breaking (vs the previous commit) + ruff"
	@echo "make setup  create .venv, install dependencies and buf, generate stubs"
	@echo "make proto  regenerate the Python stubs from protos/"

setup: $(SETUP_STAMP) $(GEN_STAMP)

$(SETUP_STAMP): pyproject.toml package.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: these wheels come from this machine's disk (see FRAMEWORK-NOTES).
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | $(PIP_QUIET)
	$(PY) -m pip install -q -e '.[dataset,gateway,ultralytics,timm,hf,export,mlflow,dev]' 2>&1 | $(PIP_QUIET)
	npm install --no-audit --no-fund --loglevel=error
	touch $@

proto: $(SETUP_STAMP)
	rm -f $(GEN_STAMP)
	$(MAKE) $(GEN_STAMP)

$(GEN_STAMP): $(PROTOS) $(SETUP_STAMP)
	rm -f sdk/visionmesh/v1/*_pb2*.py sdk/visionmesh/v1/*_pb2*.pyi
	$(PY) -m grpc_tools.protoc -I protos -I third_party/googleapis \
		--python_out=sdk --pyi_out=sdk --grpc_python_out=sdk $(PROTOS)
	touch $@

run: setup
	$(PY) scripts/run_all.py

# The whole platform from a terminal; the recipe is RECIPE in scripts/demo.py
# (VISIONMESH_DEMO_* variables shorten it).
demo: setup
	$(PY) scripts/demo.py

test: setup
	$(PY) -m pytest

# buf breaking compares the protos with those of the previous commit (BUF_AGAINST to change).
BUF_AGAINST ?= .git\#ref=HEAD~1

lint: setup
	$(BUF) lint
	@if git rev-parse -q --verify HEAD~1 >/dev/null; then \
		echo "$(BUF) breaking --against '$(BUF_AGAINST)'"; \
		$(BUF) breaking --against '$(BUF_AGAINST)'; \
	else echo "buf breaking: skipped (no previous commit to compare with)"; fi
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: setup
	@for f in bench/*.py; do echo "== $$f"; $(PY) $$f; done

clean:
	rm -rf $(VENV) node_modules sdk/visionmesh/v1/*_pb2*.py* $(GEN_STAMP)
