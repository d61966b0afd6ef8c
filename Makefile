# spikebatch developer entry points. `make install` is idempotent; every target installs first.
SHELL := /bin/bash
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export DANDI_NO_ET := 1
export PYTHONUNBUFFERED := 1
export NO_MKDOCS_2_WARNING := 1
# No AWS here: a fixed dummy region keeps boto3 and cdk synth from looking one up.
export AWS_DEFAULT_REGION ?= us-east-1

VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: install demo test test-sorters test-image image synth lint bench docs clean

install: $(STAMP) $(NODE_STAMP)

# Torch first and pinned: anything else would pull several GB of CUDA wheels.
$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c requirements/constraints.txt -e ".[worker,cli,lambda,cdk,dev]"
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: install
	$(PY) -m spikebatch.worker.demo

# One worker per core (at most 4), handed test files as they finish: the suite waits on
# servers, subprocesses and sorters. Two tiers run apart, each by its own target (and both by
# CI): the real Kilosort4 sorts (marker slow: `make test-sorters`, ~7 min on 2 cores) and the
# container tests (marker docker: `make image && make test-image`). Everything else, the
# worker end to end included (with a stand-in sort), is `make test`; a file's tests stay on one
# worker (--dist loadfile), so its module fixtures (a study run, an array of runs) run once.
test: install
	@echo "make test: the real sorts run with: make test-sorters; the containers with: make image && make test-image"
	$(PY) -m pytest -q -n auto --maxprocesses 4 -m "not docker and not slow" --dist loadfile --durations=20

test-sorters: install
	$(PY) -m pytest -q -n auto --maxprocesses 4 -m "slow and not docker" --durations=10

# The worker images, built with the local Docker engine through `spikebatch image build`.
# Upstream bases that cannot be pulled (no registry reachable) get local stand-ins first.
image: install
	$(PY) -c 'from spikebatch.cli.engine import exit_unless_engine; exit_unless_engine("make image")'
	bash containers/standins/build.sh
	$(VENV)/bin/spikebatch image build --sorter kilosort4
	$(VENV)/bin/spikebatch image build --sorter kilosort3

test-image: install
	$(PY) -m pytest -q -m docker -rs tests/image

synth: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH npx cdk synth --quiet

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint containers/*Dockerfile* containers/standins/*.Dockerfile

bench: install
	$(PY) -m bench

# The documentation site into site/: the reference pages are rendered from the code
# (docs/gen_reference.py, through the hook in mkdocs.yml); --strict fails on a broken link.
docs: install
	$(PY) -m mkdocs build --strict --quiet
	@echo "docs: open site/index.html"

clean:
	rm -rf cdk.out demo-results site .pytest_cache .ruff_cache
