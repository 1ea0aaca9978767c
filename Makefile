# alexctl: `make demo` runs the whole chain on generated data; `make test` runs the suite.
# Both create ./.venv on first use. See README.md.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch 2.14.1 / torchvision 0.29.1 lie on the build machines' disk (pip takes them from there).
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: all demo test install bench docs clean

all: test

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(MAKE) -f pipelines/demo.mk PY=$(abspath $(PY))

bench: $(STAMP)
	$(MAKE) -f pipelines/bench.mk PY=$(abspath $(PY))

docs: $(STAMP)
	$(PY) -m alexctl.docgen

clean:
	rm -rf demo out .pytest_cache
