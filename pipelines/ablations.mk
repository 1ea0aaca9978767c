# The paper's design choices switched off one at a time on Imagenette, in one table:
#   LRN (3.3), overlapping pooling (3.4), two columns vs one (3.2), PCA colour augmentation (4.1),
#   ten crops vs one (4.1), one model vs five (6).
# The baseline and its four other seeds are imagenette.mk's runs (shared data and directories).
#
#   make -f pipelines/ablations.mk               # -> out/imagenette/ablations/report.md
include $(dir $(lastword $(MAKEFILE_LIST)))imagenette.mk
.DEFAULT_GOAL := ablations

VARIANTS := no-lrn plain-pooling one-column no-pca
FLAGS_no-lrn        := --no-lrn
FLAGS_plain-pooling := --pooling plain
FLAGS_one-column    := --columns 1
FLAGS_no-pca        := --lighting-std 0

.PHONY: ablations
ablations: $(OUT)/ablations/report.md

$(OUT)/ablations/%/run.json: $(DATA)/val/manifest.json $(call flags-stamp,$(OUT)/train-flags.txt,$(TRAIN))
	$(ALEXCTL) train $(OUT)/ablations/$* --data $(DATA) --seed 0 $(TRAIN) $(FLAGS_$*)

$(OUT)/ablations/%/eval/val-10crop.json: $(OUT)/ablations/%/run.json
	$(ALEXCTL) eval $(OUT)/ablations/$* --crops 10

$(OUT)/ablations/report.md: $(OUT)/ensemble/run.json $(foreach v,$(VARIANTS),$(OUT)/ablations/$(v)/eval/val-10crop.json)
	$(ALEXCTL) report --title "Imagenette ablations (seed 0 unless noted)" --images 0 --neighbours 0 \
	  "paper's net (1 model; see 1-crop vs 10-crop)=$(OUT)/runs/seed0" \
	  $(foreach v,$(VARIANTS),"$(v)=$(OUT)/ablations/$(v)") \
	  "ensemble of $(words $(SEEDS)) seeds=$(OUT)/ensemble" --out $(OUT)/ablations
