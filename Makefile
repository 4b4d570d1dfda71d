# Two commands on a fresh machine:  `make run` (train what is missing, then serve)
# and `make test`. `make help` lists the rest.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# `make run` serves this machine only; SERVE_HOST=0.0.0.0 serves other machines too.
SERVE_HOST ?= 127.0.0.1
export BENTOML_DO_NOT_TRACK ?= True
export TF_CPP_MIN_LOG_LEVEL ?= 2

.DEFAULT_GOAL := help
.PHONY: help install lock train run test test-fast lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# Exact versions: serving-requirements.txt (the serving stack, the image's too) and
# dev-constraints.txt (the rest; it includes the first): a release on PyPI changes nothing.
$(VENV)/.installed: pyproject.toml serving-requirements.txt dev-constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]" -c dev-constraints.txt
	touch $@

install: $(VENV)/.installed ## create .venv with the pinned stack (about 2.7 GB)

lock: ## re-resolve dev-constraints.txt from pyproject.toml (after changing a dependency)
	$(PYTHON) tools/lock.py

train: install ## train the models missing from the BentoML store (DATA_DIR: data folder)
	$(PY) -m training all --only-missing

run: train ## the main job: train what is missing, then serve on 127.0.0.1:3000
	$(VENV)/bin/bentoml serve --host $(SERVE_HOST)

test: install ## run every test, slow ones included (DATA_DIR must hold the real data)
	$(PY) -m pytest

test-fast: install ## only the tests not marked slow
	$(PY) -m pytest -m "not slow"

lint: install ## ruff
	$(VENV)/bin/ruff check service training tests loadtests tools

clean: ## remove the venv and local state (not the BentoML store)
	rm -rf $(VENV) .state .pytest_cache
