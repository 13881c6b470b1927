.PHONY: setup test test-slow lint format bench quickstart
VENV ?= .venv

setup:
	bash scripts/setup.sh

test:
	$(VENV)/bin/python -m pytest -q

test-slow:
	$(VENV)/bin/python -m pytest -q -m slow

lint:
	$(VENV)/bin/ruff check align tests scripts
	$(VENV)/bin/ruff format --check align tests scripts
	$(VENV)/bin/lint-imports

format:
	$(VENV)/bin/ruff format align tests scripts
	$(VENV)/bin/ruff check --fix align tests scripts

bench:
	$(VENV)/bin/python scripts/bench.py
