# Two entry points: `make demo` (set up, then run the embedded sync) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9

.PHONY: demo test lint bench clean

$(BIN)/bifrost-async: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

demo: $(BIN)/bifrost-async
	$(BIN)/bifrost-async demo

test: $(BIN)/bifrost-async
	$(BIN)/python -m pytest

lint: $(BIN)/bifrost-async
	$(BIN)/uv pip install --quiet --python $(BIN)/python ruff mypy
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

# The throughput sweep (benchmarks/README.md); BENCH_ARGS="--files 20" to change it.
bench: $(BIN)/bifrost-async
	$(BIN)/python benchmarks/sweep.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) bifrost-demo
