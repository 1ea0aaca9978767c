# The paper's full recipe on a user's ILSVRC-2012 files (not run in CI).
#
#   make -f pipelines/ilsvrc2012.mk TRAIN_SRC=/data/ILSVRC2012_img_train.tar \
#        VAL_SRC=/data/ILSVRC2012_img_val.tar VAL_LABELS=/data/LOC_val_solution.csv \
#        SYNSETS=../shared/data/synsets.txt OUT=/scratch/ilsvrc
#
# TRAIN_SRC: the train tar of 1000 per-class tars (read in place), or the extracted tree.
# VAL_SRC:   the 50,000 val images (tar or folder), with VAL_LABELS in any form preprocess
#            reads: LOC_val_solution.csv, `name,wnid` lines, or the devkit's
#            ILSVRC2012_validation_ground_truth.txt with VAL_FLAGS=--devkit DEVKIT_DIR.
#
# Disk: the two tars (~147 GB) stay as they are; the 256x256 shards take ~40 GB (train,
# quality 95) + ~1.6 GB (val); each run directory ~0.5 GB per kept checkpoint (--keep).
# Time: preprocess ~1.3 M images at ~300 images/s per core; training 90 epochs x 1.28 M
# images per model -- at the paper's network's measured rate on your GPU (alexctl bench).
include $(dir $(lastword $(MAKEFILE_LIST)))common.mk

TRAIN_SRC  ?= $(error set TRAIN_SRC to ILSVRC2012_img_train.tar or the extracted train folder)
VAL_SRC    ?= $(error set VAL_SRC to the val images (tar or folder))
VAL_LABELS ?= $(error set VAL_LABELS to LOC_val_solution.csv or another label file)
VAL_FLAGS  ?=
SYNSETS    ?= $(SHARED)/synsets.txt
OUT        ?= out/ilsvrc2012
SEEDS      ?= 0 1 2 3 4
TRAIN      ?=
DATA       := $(OUT)/data
TOP5       := 50

include $(PIPELINES)seeds.mk
.DEFAULT_GOAL := all

.PHONY: all data runs
all: $(OUT)/report/report.md
data: $(DATA)/val/manifest.json
runs: $(foreach s,$(SEEDS),$(OUT)/runs/seed$(s)/run.json)

$(DATA)/train/manifest.json:
	$(ALEXCTL) preprocess $(TRAIN_SRC) $(DATA) --classes $(SYNSETS)

$(DATA)/val/manifest.json: $(DATA)/train/manifest.json
	$(ALEXCTL) preprocess $(VAL_SRC) $(DATA) --split val --labels $(VAL_LABELS) $(VAL_FLAGS)
