# Two commands do all set-up on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Offline assets (weights, coco128 split, videos, the paper's logs) beside the checkout, unless set.
export LIPS_ASSETS ?= $(if $(wildcard ../shared/assets),$(abspath ../shared/assets))
DEMO   := runs/demo

.PHONY: install test test-fast demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev,lab]"
	rm -f $(VENV)/.installed-*
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# Until the pipeline issue lands: prune the authors' iter-01 10 % further, fine-tune, evaluate.
demo: $(STAMP)
	$(BIN)/lips prune --weights lips_iter01_best.pt --ratios 0.1 --out $(DEMO)/pruned.pt --log $(DEMO)/prune_directed_log.csv
	$(BIN)/lips val --weights $(DEMO)/pruned.pt --data coco128.yaml --imgsz 320 --out $(DEMO)/before.json
	$(BIN)/lips finetune --weights $(DEMO)/pruned.pt --data coco128.yaml --epochs 3 --imgsz 320 --batch 16 --out $(DEMO)/ft/finetune
	$(BIN)/lips val --weights $(DEMO)/ft/finetune/weights/last_pruned_full.pt --data coco128.yaml --imgsz 320 --out $(DEMO)/after.json

clean:
	rm -rf runs/demo .pytest_cache
