# ddpm_lite: every task starts from a fresh clone; `make demo` and `make test` set up what they need.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test unit nbval export check-export students assignments grade book execute classifier chapter5 quick bench reference errata steps protocol experiments best clean

venv: $(STAMP)

# The venv is rebuilt only when the requirements change; a second `make` reuses it.
$(STAMP): requirements-dev.txt requirements-assets.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -r requirements-assets.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The main job: train the quick preset on the CPU (at most 15 minutes on two cores), sample a guided class
# grid and put it beside the shipped best model's (runs/demo/compare_with_shipped.png).
demo: venv
	$(BIN)/ddpm-lite demo

# Notebooks are the source of the exported modules.
export: venv
	$(BIN)/python scripts/export.py

# CI's sync check: re-exporting the notebooks must not change the package.
check-export: export
	@git diff --exit-code --stat -- ddpm_lite/ || { echo "ddpm_lite/ differs from what the notebooks export: run 'make export' and commit."; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- ddpm_lite/ | grep -v '__pycache__')" || { git status --short -- ddpm_lite/; echo "untracked files appeared in ddpm_lite/ after export"; exit 1; }

unit: venv
	$(BIN)/python -m pytest tests

# Every notebook top to bottom, at small settings.
nbval: venv
	DDPM_LITE_SMALL=1 $(BIN)/python -m pytest --nbval-lax notebooks

# Course material: the chapters without their solution cells (students/, not part of the site).
students: venv
	$(BIN)/python scripts/student_copies.py students

# Course assignments of chapters 1-7 with otter-grader checks, into assignments/ (student/, handout/,
# solutions/, autograder/): generated from the chapters and ddpm_lite/checks/, never edited by hand.
assignments: venv
	$(BIN)/python scripts/assignments.py assignments

# Grade a folder of submitted notebooks offline: make grade SUBMISSIONS=folder (writes folder/grades.csv).
grade: assignments
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=folder-of-notebooks"; exit 1; }
	$(BIN)/python scripts/grade.py "$(SUBMISSIONS)" --assignments assignments

# Everything: package in sync with the notebooks, the site built with warnings as errors, unit tests
# (the browser test reads the built site), every chapter and its student copy under nbval.
# The chapters run once, as Colab runs them: tests/test_installed.py builds the wheel and runs every
# notebook from it without the clone; the student copies run in the clone (`make nbval` runs the
# chapters in the clone too).
test: venv check-export students assignments book
	DDPM_LITE_SMALL=1 $(BIN)/python -m pytest tests students --nbval-lax

# Retrain the MNIST classifier that the Inception Score uses (writes ddpm_lite/assets and results/).
classifier: venv
	$(BIN)/python scripts/train_classifier.py

# The site lands in _build/html (open _build/html/index.html).
book: venv
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "site: $(CURDIR)/_build/html/index.html"

# Re-run every notebook in place at full settings (what the site shows).
execute: venv
	for nb in notebooks/*.ipynb; do $(BIN)/jupyter execute --inplace "$$nb" || exit 1; done

# Train chapter 12's quick recipe (at most 15 minutes on a 2-core CPU) and ship it as ddpm_lite/assets/quick.pt,
# with its record, losses and class grid in results/quick*.
quick: venv
	$(BIN)/ddpm-lite train --preset quick --name quick
	$(BIN)/python scripts/package_pretrained.py runs/quick --as quick

# Train chapter 12's recipe for longer (at most 2 hours on a 2-core CPU; resumable: run it again after a stop)
# and ship it as ddpm_lite/assets/best.pt, with its record, losses and class grid in results/best*.
best: venv
	$(BIN)/ddpm-lite train --preset best --name best
	$(BIN)/python scripts/package_pretrained.py runs/best --as best

# Retrain and ship chapter 5's model (about an hour on a 2-core CPU; on a GPU, minutes).
chapter5: venv
	$(BIN)/ddpm-lite train --preset quick --name chapter5 iterations=5000 ema_decay=0.999 checkpoint_every=500 \
		prediction=eps lr_schedule=constant warmup=0
	$(BIN)/python scripts/package_pretrained.py runs/chapter5

# The real-data reference rows of chapter 7 (about 45 minutes of Inception on a 2-core CPU, then cached).
reference: venv
	$(BIN)/python -m ddpm_lite.evaluation reference

# Speed: every figure side by side with its baseline, as a ratio; writes results/bench.json.
bench: venv
	$(BIN)/python scripts/bench.py

# Chapters 8 and 9: the paper's Tables 1-3 and our configuration's ablations at CPU scale (resumable).
experiments: venv
	$(BIN)/ddpm-lite experiments plans/cpu.json

# Chapter 10: the evaluation slips and w vs diversity, then the training slips (each resumable).
errata: venv
	$(BIN)/python scripts/errata_eval.py
	$(BIN)/python scripts/errata_train.py

# FID of the shipped model against the number of sampling steps (resumable).
steps: venv
	$(BIN)/python scripts/steps_sweep.py

# Chapter 9's first table: the shipped model's 10,000-image sets (resumable), then their FID, IS and accuracy.
PROTOCOL_SETTINGS ?= dpm++:10 dpm++:20 ddim:20
PROTOCOL_MODEL ?= best
protocol: venv
	$(BIN)/python -m ddpm_lite.protocol sample --model $(PROTOCOL_MODEL) --settings $(PROTOCOL_SETTINGS)
	$(BIN)/python -m ddpm_lite.protocol evaluate --model $(PROTOCOL_MODEL)

clean:
	rm -rf _build .pytest_cache
