# ZarrBridge: the two commands a new user needs are `make demo` and `make test`.
# Each installs what is missing first (see scripts/setup.sh).

SHELL := /bin/bash
export LANG := C.UTF-8
export LC_ALL := C.UTF-8
VENV_PY := .venv/bin/python

.PHONY: setup demo test test-python test-elixir bench fuzz soak clean

setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh

# Runs both suites even when the first fails, and fails if either failed.
test: setup
	@status=0; \
	echo "==> pytest"; \
	$(VENV_PY) -m pytest -q tests || status=1; \
	echo "==> mix test"; \
	(cd elixir_client && mix test) || status=1; \
	exit $$status

test-python: setup
	$(VENV_PY) -m pytest -q tests

test-elixir: setup
	cd elixir_client && mix test

bench:
	@scripts/setup.sh --bench
	$(VENV_PY) -m bench

clean:
	rm -rf .venv elixir_client/_build elixir_client/priv/python .pytest_cache .hypothesis
