# bert_finetune — `make demo` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: install test test-all lint demo bench bench-quick clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Two workers (one per core of the CI machine); --durations shows where the time goes.
test: $(STAMP)
	$(VENV)/bin/pytest -q -n 2 --durations=15

test-all: $(STAMP)
	$(VENV)/bin/pytest -q -m ''

lint: $(STAMP)
	$(VENV)/bin/ruff check .

demo: $(STAMP)
	bash scripts/demo.sh

# Speed side by side with the peers (../shared/bench/run-peers); BENCH_ARGS adds flags
# (python -m bert_finetune.bench --help). `bench` also rewrites README.md's bench block.
bench: $(STAMP)
	$(PY) -m bert_finetune.bench --update_readme $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(PY) -m bert_finetune.bench --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .cache demo_output
