# The paper's design choices switched off one at a time on Imagenette, in one table of the paper's claims
# (`alexctl report --baseline`: each variant against the paper's recipe, paired by seed, the paper's figure
# beside it): LRN (3.3), overlapping pooling (3.4), two columns vs one (3.2), PCA colour augmentation (4.1),
# translations and reflections (4.1) and dropout (4.2) with their training curves (epochs to one training
# error, the validation - training gap), each middle convolutional layer (7), ten crops vs one (4.1), one
# model vs the ensemble of all seeds (6).
# The baseline is imagenette.mk's runs (all its SEEDS, shared data and directories); each variant trains
# with ABLATION_SEEDS (a subset of SEEDS, so that every variant run has its baseline twin).
#
#   make -f pipelines/ablations.mk                          # -> out/imagenette/ablations/claims.md
#   make -f pipelines/ablations.mk ABLATION_SEEDS="0 1 2"   # three seeds per variant: a spread
#   make -f pipelines/ablations.mk VARIANTS="no-conv3 no-conv4 no-conv5"   # some of the variants
#
# pipelines/gpu-claims.mk runs the same table on one Imagenette part, planned against the GPU time of a lease.
include $(dir $(lastword $(MAKEFILE_LIST)))imagenette.mk
.DEFAULT_GOAL := ablations

ABLATION_SEEDS ?= 0
VARIANTS ?= no-lrn plain-pooling one-column no-pca no-augmentation no-dropout no-conv3 no-conv4 no-conv5
FLAGS_no-lrn          := --no-lrn
FLAGS_plain-pooling   := --pooling plain
FLAGS_one-column      := --columns 1
FLAGS_no-pca          := --lighting-std 0
FLAGS_no-augmentation := --train-crop center --no-flip
FLAGS_no-dropout      := --dropout 0
FLAGS_no-conv3        := --drop-layer conv3
FLAGS_no-conv4        := --drop-layer conv4
FLAGS_no-conv5        := --drop-layer conv5
ABLATION_RUNS := $(foreach v,$(VARIANTS),$(foreach s,$(ABLATION_SEEDS),$(OUT)/ablations/$(v)/seed$(s)))

.PHONY: ablations
ablations: $(OUT)/ablations/report.md

# $(OUT)/ablations/<variant>/seedN
$(OUT)/ablations/%/run.json: $(DATA)/val/manifest.json $(call flags-stamp,$(OUT)/train-flags.txt,$(TRAIN))
	$(ALEXCTL) train $(OUT)/ablations/$* --data $(DATA) --seed $(patsubst seed%,%,$(notdir $*)) $(TRAIN) \
	  $(FLAGS_$(patsubst %/,%,$(dir $*)))

$(OUT)/ablations/%/eval/val-10crop.json: $(OUT)/ablations/%/run.json
	$(ALEXCTL) eval $(OUT)/ablations/$* --crops 10

$(OUT)/ablations/report.md: $(ENSEMBLE) $(EVALS) $(foreach r,$(ABLATION_RUNS),$(r)/eval/val-10crop.json)
	$(ALEXCTL) report --baseline "paper's recipe" --title "Imagenette ablations" --images 0 --neighbours 0 \
	  $(foreach r,$(RUNS),"paper's recipe=$(r)") \
	  $(foreach r,$(ABLATION_RUNS),"$(patsubst $(OUT)/ablations/%/,%,$(dir $(r)))=$(r)") \
	  $(if $(ENSEMBLE),"ensemble of $(words $(SEEDS))=$(OUT)/ensemble") --out $(OUT)/ablations
