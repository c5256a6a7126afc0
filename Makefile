# ZarrBridge: the two commands a new user needs are `make demo` and `make test`.
# Each installs what is missing first (see scripts/setup.sh).

SHELL := /bin/bash
export LANG := C.UTF-8
export LC_ALL := C.UTF-8
VENV_PY := .venv/bin/python

.PHONY: setup demo test lint lint-elixir lint-python test-python test-elixir bench fuzz soak clean

setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh

# Runs the gates and both suites even when one fails, and fails if any failed.
test: setup
	@status=0; \
	$(MAKE) --no-print-directory lint || status=1; \
	echo "==> pytest"; \
	$(VENV_PY) -m pytest -q tests || status=1; \
	echo "==> mix test"; \
	(cd elixir_client && mix test) || status=1; \
	exit $$status

# What a reviewer checks before reading: formatting, warnings, dependency
# cycles (and, for Python, types and lint).
lint-elixir:
	@echo "==> Elixir gates: format, warnings, xref cycles"
	@cd elixir_client && mix format --check-formatted \
	  && mix compile --force --warnings-as-errors \
	  && MIX_ENV=test mix compile --force --warnings-as-errors \
	  && mix xref graph --format cycles --fail-above 0 \
	  && mix xref graph --format cycles --label compile-connected --fail-above 0

lint-python: setup
	@echo "==> Python gates: mypy --strict, ruff"
	@$(VENV_PY) -m mypy && $(VENV_PY) -m ruff check pybridge

lint: lint-elixir lint-python

test-python: setup
	$(VENV_PY) -m pytest -q tests

test-elixir: setup
	cd elixir_client && mix test

bench:
	@scripts/setup.sh --bench
	$(VENV_PY) -m bench

clean:
	rm -rf .venv elixir_client/_build elixir_client/priv/python .pytest_cache .hypothesis
