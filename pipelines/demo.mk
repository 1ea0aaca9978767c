# `make demo`: the whole chain on images alexctl generates itself, on a 2-core CPU, in minutes.
#
#   demo-data -> preprocess (train + held-out val) -> train 3 seeds -> eval (1 and 10 crops)
#             -> ensemble -> report
#
# The demo shrinks what a CPU cannot afford, never what a command means: a narrower net
# (--width 0.125: 12-32-48-48-32 kernels, 512 units), 10 epochs of 576 images, and the
# paper's learning rate scaled to the smaller batch (0.01 x 32/128 = 0.0025).
include $(dir $(lastword $(MAKEFILE_LIST)))common.mk

OUT    ?= demo
SEEDS  ?= 0 1 2
IMAGES ?= --classes 6 --per-class 120
TRAIN  ?= --width 0.125 --batch-size 32 --lr 0.0025 --epochs 10 --checkpoint-minutes 0
DATA   := $(OUT)/data
TOP5   := 12

include $(PIPELINES)seeds.mk
.DEFAULT_GOAL := demo

.PHONY: demo
demo: $(OUT)/report/report.md
	@echo
	@cat $(if $(ENSEMBLE),$(OUT)/ensemble,$(firstword $(RUNS)))/eval/val-10crop.json | $(PY) -c "import json,sys; \
	e=json.load(sys.stdin); print('%s: top-1 error %.1f%%, top-5 error %.1f%% on %d held-out images (chance: %.1f%%)' \
	% ('ensemble of %d' % e['members'] if 'members' in e else e['run_dir'], 100*e['top1_error'], \
	100*e['top5_error'], e['num_images'], 100*e['chance_top1_error']))"
	@echo "report: $(OUT)/report/report.md"

$(OUT)/images/synsets.txt:
	$(ALEXCTL) demo-data $(OUT)/images --force $(IMAGES)

$(DATA)/train/manifest.json: $(OUT)/images/synsets.txt
	$(ALEXCTL) preprocess $(OUT)/images $(DATA) --holdout 0.2 --names $(OUT)/images/synsets.txt

$(DATA)/val/manifest.json: $(DATA)/train/manifest.json
	$(ALEXCTL) preprocess $(OUT)/images $(DATA) --split val --holdout 0.2
