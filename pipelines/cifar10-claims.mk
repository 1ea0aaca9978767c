# The paper's two CIFAR-10 claims, with its four-layer net sized for 32x32 images (--arch cifar:
# 24x24 crops), on ../shared/data/cifar10-jpeg (50,000 training images; 10% held out as "test").
#
#   Figure 1 (3.1): the ReLU net reaches 25% training error six times faster than the same net
#     with tanh units. "No regularization of any kind": no weight decay, dropout, colour
#     augmentation or flips; the learning rate of each net chosen "to make training as fast as
#     possible" -- set LR_RELU / LR_TANH from a sweep (`make ... sweep` trains three of each).
#   LRN (3.3): test error 13% without response normalisation, 11% with it.
#
#   make -f pipelines/cifar10-claims.mk            # both claims -> out/cifar10/claims.md
#
# On a 2-core CPU one epoch of 45,000 images takes a few minutes; on a GPU, seconds.
include $(dir $(lastword $(MAKEFILE_LIST)))common.mk

CIFAR     ?= $(SHARED)/cifar10-jpeg/train.tar.gz
OUT       ?= out/cifar10
DATA      := $(OUT)/data
LR_RELU   ?= 0.01
LR_TANH   ?= 0.01
FIG1      ?= --arch cifar --epochs 40 --schedule constant --weight-decay 0 --dropout 0 --lighting-std 0 --no-flip
LRN_EPOCHS ?= 60
CLAIM_LRN ?= --arch cifar --epochs $(LRN_EPOCHS) --schedule plateau:5 --dropout 0

.PHONY: all figure1 lrn sweep
all: $(OUT)/claims.md
figure1: $(OUT)/runs/relu/run.json $(OUT)/runs/tanh/run.json
lrn: $(OUT)/runs/lrn/run.json $(OUT)/runs/nolrn/run.json

$(DATA)/train/manifest.json:
	$(ALEXCTL) preprocess $(CIFAR) $(DATA) --size 32 --holdout 0.1

$(DATA)/val/manifest.json: $(DATA)/train/manifest.json
	$(ALEXCTL) preprocess $(CIFAR) $(DATA) --size 32 --split val --holdout 0.1

$(OUT)/runs/relu/run.json: $(DATA)/val/manifest.json
	$(ALEXCTL) train $(OUT)/runs/relu --data $(DATA) $(FIG1) --activation relu --lr $(LR_RELU)

$(OUT)/runs/tanh/run.json: $(DATA)/val/manifest.json
	$(ALEXCTL) train $(OUT)/runs/tanh --data $(DATA) $(FIG1) --activation tanh --lr $(LR_TANH)

$(OUT)/runs/lrn/run.json: $(DATA)/val/manifest.json
	$(ALEXCTL) train $(OUT)/runs/lrn --data $(DATA) $(CLAIM_LRN) --lrn

$(OUT)/runs/nolrn/run.json: $(DATA)/val/manifest.json
	$(ALEXCTL) train $(OUT)/runs/nolrn --data $(DATA) $(CLAIM_LRN) --no-lrn

$(OUT)/runs/%/eval/val-10crop.json: $(OUT)/runs/%/run.json
	$(ALEXCTL) eval $(OUT)/runs/$* --crops 10

$(OUT)/claims.md: $(OUT)/runs/relu/run.json $(OUT)/runs/tanh/run.json $(OUT)/runs/lrn/eval/val-10crop.json $(OUT)/runs/nolrn/eval/val-10crop.json
	$(ALEXCTL) report --reach 0.25 --title "CIFAR-10 claims (Figure 1: ReLU vs tanh; section 3.3: LRN)" \
	  --images 0 --neighbours 0 --out $(OUT)/claims \
	  "ReLU (lr $(LR_RELU))=$(OUT)/runs/relu" "tanh (lr $(LR_TANH))=$(OUT)/runs/tanh" \
	  "with LRN=$(OUT)/runs/lrn" "without LRN=$(OUT)/runs/nolrn"
	cp $(OUT)/claims/report.md $@

# Three learning rates per activation, 10 epochs each: pick the fastest for LR_RELU / LR_TANH.
SWEEP_LRS ?= 0.003 0.01 0.03
sweep: $(foreach a,relu tanh,$(foreach l,$(SWEEP_LRS),$(OUT)/sweep/$(a)-$(l)/run.json))
	$(ALEXCTL) report --reach 0.25 --title "Figure 1 learning-rate sweep" --images 0 --neighbours 0 \
	  --out $(OUT)/sweep $(foreach a,relu tanh,$(foreach l,$(SWEEP_LRS),"$(a) lr $(l)=$(OUT)/sweep/$(a)-$(l)"))

$(OUT)/sweep/%/run.json: $(DATA)/val/manifest.json
	$(ALEXCTL) train $(OUT)/sweep/$* --data $(DATA) $(FIG1) --epochs 10 \
	  --activation $(word 1,$(subst -, ,$*)) --lr $(word 2,$(subst -, ,$*))
