# The paper's claims that need a GPU, each measured and set beside the paper's figure (docs/results.md):
#   cifar10     section 3.3 on CIFAR-10: test error with and without LRN (paper: 11% and 13%), two seeds each
#   imagenette  on one Imagenette part, each against the paper's recipe at the same budget, paired by seed:
#               no translations or reflections (4.1) and no dropout (4.2), also on their training curves;
#               no conv3, no conv4, no conv5 (7); one column at half width (3.2); no LRN (3.3); no PCA
#               lighting (4.1); non-overlapping pooling (3.4); ten crops against one (4.1); five models
#               averaged against one (6)
# into OUT/cifar10.md and OUT/imagenette.md (the tables, with where and when they were measured), their
# numbers in OUT/*.json, and the full reports (curves, kernels) in OUT/cifar10/ and OUT/imagenette/.
#
# Planned against the GPU time there is: each part's steps (the data; the recipe's runs; one step per claim,
# its seeds in parallel) go through alexctl.benchmarking.plan (alexctl/benchmarking/gpuclaims.py), the most
# telling claims first, against BUDGET_S seconds (default 480) of the call; each step runs in its own
# process, its record written before and after (OUT/plan-P.json, and OUT/plan-P.md: planned and measured
# seconds, done or owed and why). What does not fit is owed; the next call goes on from OUT.
#
#   make gpu-claims                              # the parts whose data are here (below)
#   make -f pipelines/gpu-claims.mk cifar10      # data + 2 seed steps (4 runs x 60 epochs of 45,000 images)
#   make -f pipelines/gpu-claims.mk imagenette   # data + recipe + 11 claim steps (32 runs x 30 epochs of ~4,240
#                                                # images): about six calls at the estimates below
#
# On a lent GPU (device tool; nothing has been measured there yet, so the estimates are guesses).
# A call carries at most 64 MiB, runs at most 10 minutes and brings back at most 8 files, and the CIFAR-10 tar
# (16 MB) and an Imagenette part (55 MB) do not travel together: one call per part. Here, first:
#   pipelines/gpu-prepare.sh                                     # .whl/ (simplejpeg), .data/imagenette-224/
#   mkdir -p .data/cifar10-jpeg && cp ../shared/data/cifar10-jpeg/train.tar.gz .data/cifar10-jpeg/
# then calls with carry [".whl", ".data/cifar10-jpeg", "out/gpu-claims"] or [".whl", ".data/imagenette-224",
# "out/gpu-claims"], each running (P = cifar10 or imagenette):
#   timeout 560 make -f pipelines/gpu-claims.mk P; r=$?; make -f pipelines/gpu-claims.mk export;
#   cd out/gpu-claims && cp P.md P.json plan-P.json plan-P.md plan-P.log work.tar.gz $OUT/; exit $r
# and copy what comes back into out/gpu-claims/ here; the same call again goes on where it stopped: on the
# warm machine from its checkpoints, on a fresh one from work.tar.gz (the complete runs) and the records.
#
# Without CUDA the same targets run a miniature (SCALE=mini: a few hundred images, 1 epoch, width 0.125),
# which tests/test_claims_pipelines.py runs (two claims over three calls), so that the command cannot rot
# between leases.
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

# ---------------------------------------------------------------- the runs, per scale
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
JOBS         ?= 3
FULL_SEEDS    ?= 0 1 2 3 4
VARIANT_SEEDS ?= 0 1 2
else
# Every alexctl process costs seconds of imports on a CPU: as few runs as still make every row.
CIFAR_BUDGET ?= --epochs 1 --subset 500 --batch-size 32 --checkpoint-minutes 0
NETTE_BUDGET ?= --epochs 1 --subset 100 --width 0.125 --batch-size 16 --lr 0.00125 --checkpoint-minutes 0 --keep 0
JOBS         ?= 2
FULL_SEEDS    ?= 0 1
VARIANT_SEEDS ?= 0
endif
CIFAR_TRAIN := --arch cifar --lr $(CIFAR_LR) --dropout 0 --lighting-std 0 $(CIFAR_BUDGET)
NETTE_TRAIN := $(NETTE_BUDGET)
# The Imagenette variants: each switches off one part of the paper's recipe. In the order the plan takes them
# when values tie; VALUE_x: how telling the claim is (the plan runs the most telling first): the overfitting
# claims (4.1, 4.2) and depth (7) have the largest effects, pooling (3.4, 0.4 points) the smallest, below
# what a short run on one part can resolve.
VARIANTS ?= no-augmentation no-dropout no-conv3 no-conv4 no-conv5 one-column no-lrn no-pca plain-pooling
FLAGS_full            :=
FLAGS_no-augmentation := --train-crop center --no-flip
FLAGS_no-dropout      := --dropout 0
FLAGS_no-conv3        := --drop-layer conv3
FLAGS_no-conv4        := --drop-layer conv4
FLAGS_no-conv5        := --drop-layer conv5
FLAGS_one-column      := --columns 1
FLAGS_no-lrn          := --no-lrn
FLAGS_no-pca          := --lighting-std 0
FLAGS_plain-pooling   := --pooling plain
LABEL_full            := paper's recipe
LABEL_no-augmentation := no translations or reflections
LABEL_no-dropout      := no dropout
LABEL_no-conv3        := no conv3
LABEL_no-conv4        := no conv4
LABEL_no-conv5        := no conv5
LABEL_one-column      := one column
LABEL_no-lrn          := no LRN
LABEL_no-pca          := no PCA lighting
LABEL_plain-pooling   := pooling 2/2
VALUE_no-augmentation := 90
VALUE_no-dropout      := 85
VALUE_no-conv3        := 80
VALUE_no-conv4        := 78
VALUE_no-conv5        := 76
VALUE_one-column      := 70
VALUE_no-lrn          := 65
VALUE_no-pca          := 60
VALUE_ensemble        := 55
VALUE_ten-crops       := 40
VALUE_plain-pooling   := 50

# ---------------------------------------------------------------- the plan, per call
# BUDGET_S: seconds of one call the steps may take (a device command runs at most 600 s; the rest is for the
# table, `export` and the copy). Estimates of each step, in seconds; on a GPU they are guesses until a call has
# measured them (OUT/plan-*.md: planned against measured seconds); a step is stopped at 3x its estimate.
BUDGET_S ?= 480
ifeq ($(SCALE),gpu)
CIFAR_DATA_S  ?= 60
CIFAR_SEED_S  ?= 180
NETTE_DATA_S  ?= 60
NETTE_CLAIM_S ?= 150
NETTE_EVAL_S  ?= 30
else
CIFAR_DATA_S  ?= 30
CIFAR_SEED_S  ?= 30
NETTE_DATA_S  ?= 30
NETTE_CLAIM_S ?= 30
NETTE_EVAL_S  ?= 15
endif

.PHONY: all cifar10 imagenette cifar10-table imagenette-table export
.DEFAULT_GOAL := all
# `all` makes the parts whose data are here, one after the other, each with its own BUDGET_S (one device call
# carries one of them: name it).
PARTS := $(if $(wildcard $(CIFAR)),cifar10) $(if $(wildcard $(PART)),imagenette)
all: | $(SITE_READY)
	@$(if $(PARTS),,echo "gpu-claims: neither $(CIFAR) nor $(PART) exists: nothing to measure" >&2; exit 2)
	rc=0; $(foreach p,$(PARTS),$(SELF) $(p) || rc=1;) exit $$rc
	@$(foreach p,cifar10 imagenette,$(if $(filter $(p),$(PARTS)),echo "gpu-claims: $(OUT)/$(p).md";,\
	  echo "gpu-claims: $(p) skipped: no data ($(if $(filter cifar10,$(p)),CIFAR=$(CIFAR),PART=$(PART)))";))
# Several trainings at once: the GPU is far from full with one small net (and make resumes either way).
MAKEFLAGS += -j$(JOBS)

# One part: its steps through the planner (alexctl.benchmarking.gpuclaims: the most telling first, each a make
# of its targets in its own process, owed when it does not fit), then its table from the runs complete so far
# (a make of its own, which finds them). The call fails when a step failed; owed steps are no failure.
SELF = $(MAKE) --no-print-directory -f $(abspath $(firstword $(MAKEFILE_LIST))) SCALE=$(SCALE)
PLAN = PYTHONPATH=$(PYPATH)$${PYTHONPATH:+:$$PYTHONPATH} PYTHONUNBUFFERED=1 $(PY) -m alexctl.benchmarking.gpuclaims \
       $(OUT) --budget $(BUDGET_S) --make "$(SELF) -k -j$(JOBS)"
cifar10 imagenette: %: | $(SITE_READY)
	rc=0; $(PLAN) --stem plan-$* --title "gpu-claims $* ($(SCALE) scale)" $(STEPS_$*) || rc=$$?; \
	  $(SELF) $(OUT)/$*.md && exit $$rc

# The runs complete now (their 10-crop evaluation written), found when a make reads this file.
complete = $(shell cd $(WORK) 2>/dev/null && find $(1) -path '*/seed*/eval/val-10crop.json' 2>/dev/null \
             | sed 's|/eval/val-10crop.json$$||' | sort)
comma := ,
space := $(subst ,, )
targets = $(subst $(space),$(comma),$(strip $(1)))

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

# The steps: the data, then each seed's pair (with and without LRN).
STEPS_cifar10 := data:0:$(CIFAR_DATA_S):-:$(C)/data/val/manifest.json \
  $(foreach s,$(CIFAR_SEEDS),seed$(s):$(if $(filter $(firstword $(CIFAR_SEEDS)),$(s)),100,90):$(CIFAR_SEED_S):data:$(call \
    targets,$(foreach v,lrn nolrn,$(C)/$(v)/seed$(s)/eval/val-10crop.json)))

# The table from the complete runs, made again when they change (a variable: the title's comma would split $(if)).
CIFAR_DONE = $(call complete,cifar10)
CIFAR_REPORT = $(ALEXCTL) report --baseline "with LRN" --images 0 --neighbours 0 --out $(OUT)/cifar10 \
  --title "CIFAR-10, section 3.3: the four-layer net with and without LRN ($(SCALE) scale)" \
  $(foreach r,$(CIFAR_DONE),"$(if $(findstring /nolrn/,$(r)),without,with) LRN=$(WORK)/$(r)")
$(OUT)/cifar10/report.md: $(call flags-stamp,$(OUT)/cifar10-complete.txt,$(CIFAR_DONE))
	$(if $(filter cifar10/lrn/%,$(CIFAR_DONE)),$(CIFAR_REPORT),$(call nothing,$@))

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

# The baseline's runs also with 1 crop, after the 10 crops that make a run complete (a run's eval/ takes one
# writer at a time): the ten-crop claim (4.1).
$(foreach r,$(FULL_RUNS),$(r)/eval/val-1crop.json): %/eval/val-1crop.json: %/eval/val-10crop.json
	$(ALEXCTL) eval $* --crops 1

$(I)/ensemble/run.json: $(foreach r,$(FULL_RUNS),$(r)/eval/val-10crop.json)
	$(ALEXCTL) ensemble $(FULL_RUNS) --out $(I)/ensemble --crops 10

# The steps: the data; the recipe's runs that the claims pair with; each claim's runs; the ten-crop claim on the
# recipe's runs; the recipe's other seeds and their ensemble (section 6). EXTRA: which of the last two to plan.
EXTRA ?= ten-crops ensemble
PAIRED_RUNS := $(foreach s,$(VARIANT_SEEDS),$(I)/full/seed$(s))
STEPS_imagenette := data:0:$(NETTE_DATA_S):-:$(I)/data/val/manifest.json \
  recipe:0:$(NETTE_CLAIM_S):data:$(call targets,$(foreach r,$(PAIRED_RUNS),$(r)/eval/val-10crop.json)) \
  $(foreach v,$(VARIANTS),$(v):$(VALUE_$(v)):$(NETTE_CLAIM_S):data$(comma)recipe:$(call \
    targets,$(foreach s,$(VARIANT_SEEDS),$(I)/$(v)/seed$(s)/eval/val-10crop.json))) \
  $(if $(filter ten-crops,$(EXTRA)),ten-crops:$(VALUE_ten-crops):$(NETTE_EVAL_S):data$(comma)recipe:$(call \
    targets,$(foreach r,$(PAIRED_RUNS),$(r)/eval/val-1crop.json))) \
  $(if $(and $(filter ensemble,$(EXTRA)),$(word 2,$(FULL_SEEDS))),ensemble:$(VALUE_ensemble):$(NETTE_CLAIM_S):data$(comma)recipe:$(I)/ensemble/run.json)

# The table from the complete runs (and the ensemble, once made), made again when they change.
NETTE_DONE = $(call complete,imagenette) $(if $(wildcard $(I)/ensemble/run.json),imagenette/ensemble)
NETTE_REPORT = $(ALEXCTL) report --baseline "$(LABEL_full)" --images 0 --neighbours 0 --out $(OUT)/imagenette \
  --title "Imagenette ($(notdir $(PART))), the paper's ablations ($(SCALE) scale)" \
  $(foreach r,$(filter-out %/ensemble,$(NETTE_DONE)),"$(LABEL_$(call variant,$(r:imagenette/%=%)))=$(WORK)/$(r)") \
  $(if $(filter %/ensemble,$(NETTE_DONE)),"ensemble of $(words $(FULL_SEEDS))=$(I)/ensemble")
$(OUT)/imagenette/report.md: $(call flags-stamp,$(OUT)/imagenette-complete.txt,$(NETTE_DONE))
	$(if $(filter imagenette/full/%,$(NETTE_DONE)),$(NETTE_REPORT),$(call nothing,$@))

# ---------------------------------------------------------------- the tables, where docs/results.md takes them

# No run of the baseline is complete yet: a page that says so, where the report would be.
nothing = mkdir -p $(dir $(1)) && echo "No run of the paper's recipe is complete yet: nothing to compare." > $(1) && \
          cp $(1) $(dir $(1))claims.md && echo '{"ablations": null}' > $(dir $(1))claims.json

# The report's claims.md (where and when the runs trained, then the tables) under the command that made
# it, and where the plan stands (OUT/plan-*.md: done, owed, and why); claims.json (the numbers) beside it.
$(OUT)/%.md: $(OUT)/%/report.md
	{ echo "\`make -f pipelines/gpu-claims.mk $*\` (SCALE=$(SCALE)); runs in $(WORK)/$*, the full report in" \
	  "$(OUT)/$*/report.md; what is done and what is owed: $(OUT)/plan-$*.md."; echo; \
	  cat $(OUT)/$*/claims.md; } > $@.tmp
	cp $(OUT)/$*/claims.json $(OUT)/$*.json
	mv $@.tmp $@

# A run directory's seed and variant: full/seed3 -> 3, full.
seed    = $(patsubst seed%,%,$(notdir $(1)))
variant = $(patsubst %/,%,$(dir $(1)))
