# Imagenette (10 ImageNet classes; ../shared/data/imagenette-224 or any copy) with the paper's recipe:
#   preprocess (10% of each class held out as val) -> five seeds -> eval 1 and 10 crops
#   -> ensemble of five -> report.
#
#   make -f pipelines/imagenette.mk                        # everything, into out/imagenette
#   make -f pipelines/imagenette.mk -j5 runs               # five trainings at once (one GPU each: DEVICES)
#   make -f pipelines/imagenette.mk IMAGENETTE=/data/imagenette2 SRC=/data/imagenette2/train
#
# 90 epochs of 8,500 images is ~770 k samples per model: hours on one GPU, days on a CPU.
include $(dir $(lastword $(MAKEFILE_LIST)))common.mk

IMAGENETTE ?= $(SHARED)/imagenette-224
SRC        ?= $(IMAGENETTE)/train-1of2.tar $(IMAGENETTE)/train-2of2.tar
SYNSETS    ?= $(SHARED)/synsets.txt
OUT        ?= out/imagenette
SEEDS      ?= 0 1 2 3 4
EPOCHS     ?= 90
EXTRA      ?=
TRAIN      := --epochs $(EPOCHS) $(EXTRA)
DATA       := $(OUT)/data
TOP5       := 20

include $(PIPELINES)seeds.mk
.DEFAULT_GOAL := all

.PHONY: all data runs evals
all: $(OUT)/report/report.md
data: $(DATA)/val/manifest.json
runs: $(foreach s,$(SEEDS),$(OUT)/runs/seed$(s)/run.json)
evals: $(EVALS)

$(DATA)/train/manifest.json:
	$(ALEXCTL) preprocess $(SRC) $(DATA) --holdout 0.1 --names $(SYNSETS)

$(DATA)/val/manifest.json: $(DATA)/train/manifest.json
	$(ALEXCTL) preprocess $(SRC) $(DATA) --split val --holdout 0.1
