# Shared by the pipelines: how to call alexctl. Override on the command line, e.g.
#   make -f pipelines/imagenette.mk ALEXCTL=alexctl OUT=/scratch/imagenette
PY      ?= .venv/bin/python
ALEXCTL ?= $(PY) -m alexctl
# Every target is a file a command writes last (a manifest: manifest.json, run.json, an eval
# .json), so `make -j` is safe, a second `make` does nothing, and an interrupted `make`
# continues where it stopped: the commands themselves resume (preprocess by shard, train
# from its last checkpoint). No command leaves a partial target behind.
# Targets made by pattern rules are "intermediate" to make, which deletes them after use:
# a finished run's run.json would vanish. Keep every target.
.SECONDARY:
