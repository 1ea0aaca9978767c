# The GPU check (issue 17; docs/benchmarks.md, "The GPU check"): on a fresh GPU machine, every owed figure from
# ONE call of at most 8 minutes (BUDGET_S of command time), into OUT/gpu-check.json, .md and .log. The steps are
# planned against the budget before they start, run most valuable first, each in its own process with its own
# time cap; what cannot fit is listed as owed, and running it again with the same OUT (brought back from an
# earlier machine) goes on from there. Without CUDA the same command is a dry run of every step (about a minute).
#
#   make gpu-check                                  # the check, 480 s of command time
#   make -f pipelines/gpu-check.mk BUDGET_S=300     # a smaller piece of GPU time
#   make -f pipelines/gpu-check.mk RETRY=1          # also try again what failed in an earlier call
#
# It needs this working tree, one Imagenette part (.data/ from pipelines/gpu-prepare.sh, else ../shared/data)
# and a python3 with torch and torchvision: alexctl runs from the tree (PYTHONPATH), and simplejpeg comes from
# .whl/ when that python lacks it.

# Not common.mk: its PY insists on .venv. Paths are relative to this repository.
PIPELINES := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
ROOT    := $(abspath $(PIPELINES)..)
SHARED  ?= $(abspath $(ROOT)/../shared/data)
PY      ?= $(if $(wildcard $(ROOT)/.venv/bin/python),$(ROOT)/.venv/bin/python,python3)
PART    ?= $(firstword $(wildcard $(ROOT)/.data/imagenette-224/train-1of2.tar) $(SHARED)/imagenette-224/train-1of2.tar)
# Plain `=`, not `?=`: the device machine's environment has an OUT of its own (the folder that comes back).
# Give either on the command line: make -f pipelines/gpu-check.mk OUT=/x WORK=/y
OUT      = $(ROOT)/out/gpu-check
WORK     = /tmp/alexctl-gpu-check
MODE    ?= auto
BUDGET_S ?= 480
RETRY   ?=

include $(PIPELINES)device.mk

.PHONY: all
.DEFAULT_GOAL := all

# Always run: the planner itself knows what is done (OUT/gpu-check.json) and skips it.
all: | $(SITE_READY)
	PYTHONPATH=$(PYPATH)$${PYTHONPATH:+:$$PYTHONPATH} PYTHONUNBUFFERED=1 $(PY) -m alexctl gpu-check $(OUT) \
		--work $(WORK) --part $(PART) --mode $(MODE) --budget $(BUDGET_S) $(if $(RETRY),--retry)
