# The rules every model pipeline shares, for the data directory DATA and the seeds SEEDS:
#   train OUT/runs/seedN -> eval it with 1 and 10 crops -> ensemble OUT/ensemble (two seeds or more)
#   -> OUT/report. Include it after setting OUT, DATA, SEEDS, TRAIN (flags for every training run) and TOP5.
RUNS := $(foreach s,$(SEEDS),$(OUT)/runs/seed$(s))
EVALS := $(foreach r,$(RUNS),$(r)/eval/val-10crop.json $(r)/eval/val-1crop.json)
TOP5 ?= 20
# One seed: no ensemble (it needs two models); the report shows the run.
ENSEMBLE := $(if $(word 2,$(SEEDS)),$(OUT)/ensemble/run.json,)

$(OUT)/runs/seed%/run.json: $(DATA)/val/manifest.json $(call flags-stamp,$(OUT)/train-flags.txt,$(TRAIN))
	$(ALEXCTL) train $(OUT)/runs/seed$* --data $(DATA) --seed $* $(TRAIN)

# A run's eval/ takes one writer at a time (its lock): under `make -j` the 10-crop evaluation waits for the
# 1-crop one instead of racing it for the lock.
$(OUT)/runs/seed%/eval/val-10crop.json: $(OUT)/runs/seed%/eval/val-1crop.json
	$(ALEXCTL) eval $(OUT)/runs/seed$* --crops 10 --top5 $(TOP5)

$(OUT)/runs/seed%/eval/val-1crop.json: $(OUT)/runs/seed%/run.json
	$(ALEXCTL) eval $(OUT)/runs/seed$* --crops 1

$(OUT)/ensemble/run.json: $(EVALS)
	$(ALEXCTL) ensemble $(RUNS) --out $(OUT)/ensemble --crops 10

$(OUT)/report/report.md: $(EVALS) $(ENSEMBLE)
	$(ALEXCTL) report $(RUNS) $(if $(ENSEMBLE),$(OUT)/ensemble) --out $(OUT)/report
