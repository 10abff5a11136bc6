# The two README commands: `make demo` (train + evaluate LSPC on BallRun, CPU, a few minutes)
# and `make test`. Every target creates/reuses .venv in the repo and installs the pinned requirements.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test datasets clean-venv

install: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# dsrl and osrl-lib pin torch~=1.13 / wandb~=0.14 / protobuf~=3.19: not installable on 3.11
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

demo: install
	PYTHON=$(PY) bash scripts/demo.sh

# Offline datasets from the simulators (DSRL layout + dataset card) into DATA_DIR; existing files are kept.
DATA_DIR ?= $(HOME)/.lspc/datasets
DATASET_TASKS := OfflineBallRun-v0 OfflineCarRun-v0 OfflineBallCircle-v0 OfflineCarCircle-v0
DATASET_EPISODES ?= 600

datasets: $(foreach task,$(DATASET_TASKS),$(DATA_DIR)/$(task).hdf5)

$(DATA_DIR)/%.hdf5: | $(STAMP)
	$(PY) scripts/collect_dataset.py --task $* --episodes $(DATASET_EPISODES) --seed 0 --out $@

test: install
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
