# The paper's claims that need a GPU, each measured and set beside the paper's figure (docs/results.md):
#   cifar10     section 3.3 on CIFAR-10: test error with and without LRN (paper: 11% and 13%), two seeds each
#   imagenette  on one Imagenette part, each against the paper's recipe at the same budget, paired by seed:
#               no LRN (3.3), non-overlapping pooling (3.4), one column at half width (3.2), no PCA lighting
#               (4.1); ten crops against one (4.1); five models averaged against one (6)
# into OUT/cifar10.md and OUT/imagenette.md (the tables, with where and when they were measured), their
# numbers in OUT/*.json, and the full reports (curves, kernels) in OUT/cifar10/ and OUT/imagenette/.
#
#   make gpu-claims                              # the parts whose data are here (below)
#   make -f pipelines/gpu-claims.mk cifar10      # 4 runs x 60 epochs of 45,000 images: ~5 min (estimated)
#   make -f pipelines/gpu-claims.mk imagenette   # 17 runs x 30 epochs of ~4,240 images: ~10-15 min (estimated)
#
# On a lent GPU (device tool; nothing has been measured there yet, so the minutes above are estimates).
# A call carries at most 64 MiB and runs at most 10 minutes, and the CIFAR-10 tar (16 MB) and an Imagenette
# part (55 MB) do not travel together: one call per part. Here, first:
#   pipelines/gpu-prepare.sh                                     # .whl/ (simplejpeg), .data/imagenette-224/
#   mkdir -p .data/cifar10-jpeg && cp ../shared/data/cifar10-jpeg/train.tar.gz .data/cifar10-jpeg/
# then one call with carry [".whl", ".data/cifar10-jpeg"] and one with [".whl", ".data/imagenette-224",
# "out/gpu-claims"], each running (P = cifar10, then imagenette):
#   timeout 560 make -f pipelines/gpu-claims.mk P; r=$?; make -f pipelines/gpu-claims.mk export;
#   cp out/gpu-claims/*.md out/gpu-claims/*.json out/gpu-claims/work.tar.gz $OUT/; exit $r
# and copy what comes back into out/gpu-claims/ here. A part stopped by its limit goes on with the same call
# again: on the warm machine from its checkpoints, on a fresh one from work.tar.gz (its complete runs).
#
# Without CUDA the same targets run a miniature (SCALE=mini: a few hundred images, 1 epoch, width 0.125),
# which tests/test_claims_pipelines.py runs, so that the command cannot rot between leases.
#
# Needs this working tree, the data (.data/ from pipelines/gpu-prepare.sh, else ../shared/data) and a
# python3 with torch and torchvision: alexctl runs from the tree (PYTHONPATH), and simplejpeg comes from
# .whl/ when that python lacks it (as pipelines/gpu-check.mk).
# PY before common.mk (which would take .venv's unconditionally): .venv's python if there is one, else python3.
PY      ?= $(if $(wildcard $(ROOT)/.venv/bin/python),$(ROOT)/.venv/bin/python,python3)
include $(dir $(lastword $(MAKEFILE_LIST)))common.mk

CIFAR   ?= $(firstword $(wildcard $(ROOT)/.data/cifar10-jpeg/train.tar.gz) $(SHARED)/cifar10-jpeg/train.tar.gz)
PART    ?= $(firstword $(wildcard $(ROOT)/.data/imagenette-224/train-1of2.tar) $(SHARED)/imagenette-224/train-1of2.tar)
# Class names for the report, where a list is at hand (the device has none: wnids then).
SYNSETS ?= $(firstword $(wildcard $(ROOT)/.data/synsets.txt $(SHARED)/synsets.txt))
# Plain `=`, not `?=`: the device machine's environment has an OUT of its own (the folder that comes back).
# Give either on the command line: make -f pipelines/gpu-claims.mk OUT=/x WORK=/y
OUT      = $(ROOT)/out/gpu-claims
WORK     = $(if $(filter gpu,$(SCALE)),$(FAST_DISK),/tmp)/alexctl-gpu-claims
# gpu where torch sees CUDA, else mini (asked once, as make reads this file).
ifndef SCALE
SCALE := $(if $(shell $(PY) -c 'import torch; print(torch.cuda.is_available() or "")' 2>/dev/null),gpu,mini)
endif

# On a GPU an epoch of the paper's net on one part takes about as long as writing its checkpoints (~1 GB:
# epoch-N.pt, best.pt, last.pt): the runs live in memory (/dev/shm) when it has 32 GB free.
FAST_DISK := $(if $(shell df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 && $$4 > 33554432 {print "y"}'),/dev/shm,/tmp)

include $(PIPELINES)device.mk
ALEXCTL = PYTHONPATH=$(PYPATH)$${PYTHONPATH:+:$$PYTHONPATH} $(PY) -m alexctl

# ---------------------------------------------------------------- the budget, per scale
# CIFAR-10 (3.3): the four-layer net with the paper's recipe (random 24x24 crops, flips, weight decay), no PCA
# lighting or dropout (the net has none), the learning rate the Figure 1 probe found for ReLUs.
CIFAR_SEEDS ?= 0 1
CIFAR_LR    ?= 0.003
# Imagenette: the paper's network and recipe; every variant trains as long as the baseline.
ifeq ($(SCALE),gpu)
CIFAR_EPOCHS ?= 60
NETTE_EPOCHS ?= 30
CIFAR_BUDGET ?= --epochs $(CIFAR_EPOCHS) --schedule plateau:5
NETTE_BUDGET ?= --epochs $(NETTE_EPOCHS) --keep 0
JOBS         ?= 4
FULL_SEEDS    ?= 0 1 2 3 4
VARIANT_SEEDS ?= 0 1 2
else
# Every alexctl process costs seconds of imports on a CPU: as few runs as still make every row.
CIFAR_BUDGET ?= --epochs 1 --subset 500 --batch-size 32 --checkpoint-minutes 0
NETTE_BUDGET ?= --epochs 1 --subset 100 --width 0.125 --batch-size 16 --lr 0.00125 --checkpoint-minutes 0 --keep 0
JOBS         ?= 2
FULL_SEEDS    = 0 1
VARIANT_SEEDS = 0
endif
CIFAR_TRAIN := --arch cifar --lr $(CIFAR_LR) --dropout 0 --lighting-std 0 $(CIFAR_BUDGET)
NETTE_TRAIN := $(NETTE_BUDGET)
# The Imagenette variants: each switches off one part of the paper's recipe.
VARIANTS        := no-lrn plain-pooling one-column no-pca
FLAGS_full          :=
FLAGS_no-lrn        := --no-lrn
FLAGS_plain-pooling := --pooling plain
FLAGS_one-column    := --columns 1
FLAGS_no-pca        := --lighting-std 0
LABEL_full          := paper's recipe
LABEL_no-lrn        := no LRN
LABEL_plain-pooling := pooling 2/2
LABEL_one-column    := one column
LABEL_no-pca        := no PCA lighting

.PHONY: all cifar10 imagenette export
.DEFAULT_GOAL := all
# `all` makes the parts whose data are here (one device call carries one of them).
PARTS := $(if $(wildcard $(CIFAR)),cifar10) $(if $(wildcard $(PART)),imagenette)
all: $(PARTS)
	@$(if $(PARTS),,echo "gpu-claims: neither $(CIFAR) nor $(PART) exists: nothing to measure" >&2; exit 2)
	@$(foreach p,cifar10 imagenette,$(if $(filter $(p),$(PARTS)),echo "gpu-claims: $(OUT)/$(p).md";,\
	  echo "gpu-claims: $(p) skipped: no data ($(if $(filter cifar10,$(p)),CIFAR=$(CIFAR),PART=$(PART)))";))
cifar10: $(OUT)/cifar10.md
imagenette: $(OUT)/imagenette.md
# Several trainings at once: the GPU is far from full with one small net (and make resumes either way).
MAKEFLAGS += -j$(JOBS)

# What outlives a device machine (a call's $OUT comes back; the next call may find a fresh machine): every
# complete run (one with its 10-crop evaluation) without its checkpoints, and the flags stamps, in
# OUT/work.tar.gz. Where WORK has no stamps yet, make unpacks it before it reads the rules below, so the runs
# it holds count as done (runs depend on the data order-only: data made again on a fresh machine are no
# reason to retrain); a run that was not complete starts again.
export:
	@mkdir -p $(OUT) && cd $(WORK) && tar -czf $(OUT)/work.tar.gz.tmp --exclude=checkpoints --exclude=.lock \
	  $$(ls *-flags.txt 2>/dev/null) $$(find . -path '*/eval/val-10crop.json' | sed 's|/eval/val-10crop.json$$||')
	@mv $(OUT)/work.tar.gz.tmp $(OUT)/work.tar.gz && echo "gpu-claims: $(OUT)/work.tar.gz"
# ($(shell), not $(wildcard): make would cache WORK's listing from before the stamps are written.)
ifeq ($(shell ls $(WORK)/*-flags.txt 2>/dev/null || test ! -f $(OUT)/work.tar.gz || echo unpack),unpack)
$(info gpu-claims: unpacking $(OUT)/work.tar.gz into $(WORK)$(shell mkdir -p $(WORK) && tar -xzf $(OUT)/work.tar.gz -C $(WORK)))
endif


# ---------------------------------------------------------------- CIFAR-10: LRN (3.3)

C := $(WORK)/cifar10
CIFAR_RUNS := $(foreach v,lrn nolrn,$(foreach s,$(CIFAR_SEEDS),$(C)/$(v)/seed$(s)))

$(C)/data/train/manifest.json: | $(SITE_READY)
	$(ALEXCTL) preprocess $(CIFAR) $(C)/data --size 32 --holdout 0.1

$(C)/data/val/manifest.json: $(C)/data/train/manifest.json
	$(ALEXCTL) preprocess $(CIFAR) $(C)/data --size 32 --split val --holdout 0.1

# $(C)/<lrn|nolrn>/seedN
$(C)/%/run.json: $(call flags-stamp,$(WORK)/cifar10-flags.txt,$(CIFAR_TRAIN)) | $(C)/data/val/manifest.json
	$(ALEXCTL) train $(C)/$* --data $(C)/data --seed $(call seed,$*) $(CIFAR_TRAIN) \
	  $(if $(filter nolrn,$(call variant,$*)),--no-lrn,--lrn)

$(C)/%/eval/val-10crop.json: $(C)/%/run.json
	$(ALEXCTL) eval $(C)/$* --crops 10

$(OUT)/cifar10/report.md: $(foreach r,$(CIFAR_RUNS),$(r)/eval/val-10crop.json)
	$(ALEXCTL) report --baseline "with LRN" --images 0 --neighbours 0 --out $(OUT)/cifar10 \
	  --title "CIFAR-10, section 3.3: the four-layer net with and without LRN ($(SCALE) scale)" \
	  $(foreach r,$(CIFAR_RUNS),"$(if $(findstring /nolrn/,$(r)),without,with) LRN=$(r)")

# ---------------------------------------------------------------- Imagenette: the ablations (3.2-4.1, 6)

I := $(WORK)/imagenette
FULL_RUNS := $(foreach s,$(FULL_SEEDS),$(I)/full/seed$(s))
VARIANT_RUNS := $(foreach v,$(VARIANTS),$(foreach s,$(VARIANT_SEEDS),$(I)/$(v)/seed$(s)))

$(I)/data/train/manifest.json: | $(SITE_READY)
	$(ALEXCTL) preprocess $(PART) $(I)/data --holdout 0.1 $(if $(SYNSETS),--names $(SYNSETS))

$(I)/data/val/manifest.json: $(I)/data/train/manifest.json
	$(ALEXCTL) preprocess $(PART) $(I)/data --split val --holdout 0.1

# $(I)/<variant>/seedN
$(I)/%/run.json: $(call flags-stamp,$(WORK)/imagenette-flags.txt,$(NETTE_TRAIN)) | $(I)/data/val/manifest.json
	$(ALEXCTL) train $(I)/$* --data $(I)/data --seed $(call seed,$*) $(NETTE_TRAIN) $(FLAGS_$(call variant,$*))

$(I)/%/eval/val-10crop.json: $(I)/%/run.json
	$(ALEXCTL) eval $(I)/$* --crops 10

# The baseline's runs: 1 crop, then 10 (a run's eval/ takes one writer at a time; and a run with its 10-crop
# evaluation is complete, which `export` relies on).
$(foreach r,$(FULL_RUNS),$(r)/eval/val-1crop.json): %/eval/val-1crop.json: %/run.json
	$(ALEXCTL) eval $* --crops 1

$(foreach r,$(FULL_RUNS),$(r)/eval/val-10crop.json): %/eval/val-10crop.json: %/eval/val-1crop.json
	$(ALEXCTL) eval $* --crops 10

$(I)/ensemble/run.json: $(foreach r,$(FULL_RUNS),$(r)/eval/val-10crop.json)
	$(ALEXCTL) ensemble $(FULL_RUNS) --out $(I)/ensemble --crops 10

$(OUT)/imagenette/report.md: $(I)/ensemble/run.json $(foreach r,$(VARIANT_RUNS),$(r)/eval/val-10crop.json)
	$(ALEXCTL) report --baseline "$(LABEL_full)" --images 0 --neighbours 0 --out $(OUT)/imagenette \
	  --title "Imagenette ($(notdir $(PART))), the paper's ablations ($(SCALE) scale)" \
	  $(foreach r,$(FULL_RUNS) $(VARIANT_RUNS),"$(LABEL_$(call variant,$(r:$(I)/%=%)))=$(r)") \
	  "ensemble of $(words $(FULL_SEEDS))=$(I)/ensemble"

# ---------------------------------------------------------------- the tables, where docs/results.md takes them

# The report's claims.md (where and when the runs trained, then the tables) under the command that made
# it; claims.json (the numbers) beside it.
$(OUT)/%.md: $(OUT)/%/report.md
	{ echo "\`make -f pipelines/gpu-claims.mk $*\` (SCALE=$(SCALE)); runs in $(WORK)/$*, the full report in" \
	  "$(OUT)/$*/report.md."; echo; cat $(OUT)/$*/claims.md; } > $@.tmp
	cp $(OUT)/$*/claims.json $(OUT)/$*.json
	mv $@.tmp $@

# A run directory's seed and variant: full/seed3 -> 3, full.
seed    = $(patsubst seed%,%,$(notdir $(1)))
variant = $(patsubst %/,%,$(dir $(1)))
