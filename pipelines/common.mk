# Shared by the pipelines: where things are, and how to call alexctl. Every path is relative to this
# repository, so a pipeline runs from any directory (`make -f /path/to/pipelines/demo.mk`). Override on
# the command line, e.g.
#   make -f pipelines/imagenette.mk ALEXCTL=alexctl OUT=/scratch/imagenette
PIPELINES := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
ROOT      := $(abspath $(PIPELINES)..)
SHARED    ?= $(abspath $(ROOT)/../shared/data)
PY        ?= $(ROOT)/.venv/bin/python
ALEXCTL   ?= $(PY) -m alexctl
# Every target is a file a command writes last (a manifest: manifest.json, run.json, an eval
# .json), so `make -j` is safe, a second `make` does nothing, and an interrupted `make`
# continues where it stopped: the commands themselves resume (preprocess by shard, train
# from its last checkpoint). No command leaves a partial target behind.
# Targets made by pattern rules are "intermediate" to make, which deletes them after use:
# a finished run's run.json would vanish. Keep every target.
.SECONDARY:

# $(call flags-stamp,FILE,TEXT) names FILE, which holds TEXT: written while make reads the pipeline, and only
# when TEXT changed. A run depends on the stamp of its flags, so raising EPOCHS trains the finished runs
# further (train resumes and goes on) instead of make keeping them as they are; flags a run cannot change
# are refused by `alexctl train`. Unchanged flags leave the stamp alone: a second make has nothing to do.
flags-stamp = $(shell mkdir -p $(dir $(1)) && (printf '%s\n' '$(2)' | cmp -s - $(1) || printf '%s\n' '$(2)' > $(1)))$(1)
