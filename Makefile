# alexctl: `make demo` runs the whole chain on generated data; `make test` runs the suite.
# Both create ./.venv on first use. See README.md.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch 2.14.1 / torchvision 0.29.1 lie on the build machines' disk (pip takes them from there).
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: all demo test lint quick install bench docs gpu-check gpu-claims clean

all: test

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

# The whole suite (CI runs this), in TEST_JOBS processes (pytest-xdist; one file per process at a time, so
# a module's fixtures are built once), each process and the commands it starts on one thread (two test
# processes with two torch threads each would contend for 2 cores). TEST_JOBS=0 runs it in this process.
TEST_JOBS ?= 2
PYTEST    := $(if $(filter-out 0,$(TEST_JOBS)),OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_JOBS) --dist loadfile,$(PY) -m pytest) \
             -q --durations=20
# ruff first (lint and format, configured in pyproject.toml): seconds, and CI runs it too.
lint: $(STAMP)
	$(PY) -m ruff check alexctl tests
	$(PY) -m ruff format --check alexctl tests

test: lint
	$(PYTEST)

# A quick loop while editing: everything but the tests marked slow (whole commands in subprocesses,
# pipelines, training runs of several epochs).
quick: $(STAMP)
	$(PYTEST) -m "not slow"

demo: $(STAMP)
	$(MAKE) -f pipelines/demo.mk PY=$(abspath $(PY))

# Where the time goes on this machine (docs/benchmarks.md): the training and evaluation paths on a
# small generated data set, then preprocess's image path against a naive PIL loop.
bench: $(STAMP)
	$(PY) -m alexctl bench
	$(PY) -m alexctl bench --preprocess ../shared/data/imagenet-samples

docs: $(STAMP)
	$(PY) -m alexctl.cli.docgen

# On a GPU machine (docs/benchmarks.md, "The GPU check"): every speed figure, and the paper's recipe
# on Imagenette against the stock torchvision recipe, in one call of 8 minutes (BUDGET_S), into
# out/gpu-check/. On a CPU: a dry run of every step.
gpu-check:
	$(MAKE) -f pipelines/gpu-check.mk

# On a GPU machine, after gpu-check (docs/results.md): the paper's claims, each measured, into
# out/gpu-claims/. On a CPU: a miniature run.
gpu-claims:
	$(MAKE) -f pipelines/gpu-claims.mk

clean:
	rm -rf demo out .pytest_cache
