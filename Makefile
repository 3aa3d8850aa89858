PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup phoenix test lint format bench

setup:  ## create .venv with the CPU build of torch 2.13.0, then attnkit and all extras
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[all]"

phoenix:  ## Arize Phoenix in its own venv (build/phoenix-venv) for the OpenTelemetry end-to-end test
	$(PY) -m venv build/phoenix-venv
	build/phoenix-venv/bin/pip install -q --upgrade pip
	build/phoenix-venv/bin/pip install -q "arize-phoenix>=20.26,<21"

test:  ## lint, then every test (slow ones included)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/pytest -q

format:
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench:  ## the speed benchmarks (not tests), then benchmarks/RESULTS.md with every table
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/run_all.py
