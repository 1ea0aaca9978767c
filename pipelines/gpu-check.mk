# The GPU check (issue 10; docs/benchmarks.md, "The GPU check"): on a fresh GPU machine, every speed figure and
# the paper's recipe against the stock torchvision recipe on one Imagenette part, into OUT/gpu-check.json and
# OUT/gpu-check.md. Without CUDA the same targets run a small dry version (about a minute): every path, no figures.
#
#   make gpu-check                                   # everything: about 15 minutes on one H100
#   make -f pipelines/gpu-check.mk bench             # the data, then the speed table (one 10-minute call)
#   make -f pipelines/gpu-check.mk imagenette        # the data, then both 90-epoch recipes (another call)
#   make -f pipelines/gpu-check.mk report            # the JSON and the table again from what was measured
#
# It needs this working tree, one Imagenette part (.data/ from pipelines/gpu-prepare.sh, else ../shared/data)
# and a python3 with torch and torchvision: alexctl runs from the tree (PYTHONPATH), and simplejpeg comes from
# .whl/ when that python lacks it. Each step keeps what it measured after every measurement and goes on from
# there when run again (alexctl.benchmarking.gpucheck); the light results (OUT) and the heavy work (WORK: images, data
# directory, runs) live apart, so OUT can travel to a fresh machine and the check continues there.

# Not common.mk: its .SECONDARY would let an existing gpu-check.md stand in for a step marker that is missing (a
# step still to do on a fresh machine), and its PY insists on .venv. Paths are relative to this repository.
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
DATA    := $(WORK)/data

include $(PIPELINES)device.mk
CHECK = PYTHONPATH=$(PYPATH)$${PYTHONPATH:+:$$PYTHONPATH} PYTHONUNBUFFERED=1 $(PY) -m alexctl.benchmarking.gpucheck \
        --out $(OUT) --work $(WORK) --mode $(MODE) --command 'make -f pipelines/gpu-check.mk $(or $(MAKECMDGOALS),all)'

.PHONY: all prepare bench imagenette paper stock report
.DEFAULT_GOAL := all
.NOTPARALLEL:  # one measurement at a time: two on one GPU would time each other

all: $(OUT)/gpu-check.md
prepare: $(DATA)/val/manifest.json
bench: $(OUT)/steps/bench.json
paper: $(OUT)/steps/paper.json
stock: $(OUT)/steps/stock.json
imagenette: paper stock
report:
	$(CHECK) report


# The data: written last by preprocess (the val split's manifest). The steps depend on it order-only, so
# results carried to a fresh machine stay done while the data are made again there.
$(DATA)/val/manifest.json: | $(SITE_READY)
	$(CHECK) prepare --part $(PART)

$(OUT)/steps/bench.json: | $(DATA)/val/manifest.json
	$(CHECK) bench

# The paper's recipe runs on the fastest runtime bench found.
$(OUT)/steps/paper.json: $(OUT)/steps/bench.json | $(DATA)/val/manifest.json
	$(CHECK) paper

$(OUT)/steps/stock.json: | $(DATA)/val/manifest.json
	$(CHECK) stock

$(OUT)/gpu-check.md: $(OUT)/steps/bench.json $(OUT)/steps/paper.json $(OUT)/steps/stock.json
	$(CHECK) report
