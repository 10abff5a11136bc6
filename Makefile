# The two README commands: `make demo` (train + evaluate LSPC on BallRun, CPU, a few minutes)
# and `make test`. Every target creates/reuses .venv in the repo and installs the pinned requirements.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUITES_STAMP := $(VENV)/.installed-suites

.PHONY: install install-suites demo test test-slurm datasets clean-venv

install: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# dsrl and osrl-lib pin torch~=1.13 / wandb~=0.14 / protobuf~=3.19: not installable on 3.11
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

# Safety-Gymnasium and MetaDrive (about 450 MB more); the tests cover them, the demo does not need them.
install-suites: $(SUITES_STAMP)

$(SUITES_STAMP): $(STAMP) requirements-suites.txt requirements-suites-nodeps.txt
	$(PY) -m pip install --quiet -r requirements-suites.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-suites-nodeps.txt
	touch $(SUITES_STAMP)

demo: install
	PYTHON=$(PY) bash scripts/demo.sh

# Offline datasets from the simulators (DSRL layout + dataset card) into DATA_DIR; existing files are kept.
DATA_DIR ?= $(HOME)/.lspc/datasets
DATASET_TASKS := OfflineBallRun-v0 OfflineCarRun-v0 OfflineBallCircle-v0 OfflineCarCircle-v0
DATASET_EPISODES ?= 600

datasets: $(foreach task,$(DATASET_TASKS),$(DATA_DIR)/$(task).hdf5)

$(DATA_DIR)/%.hdf5: | $(STAMP)
	$(PY) scripts/collect_dataset.py --task $* --episodes $(DATASET_EPISODES) --seed 0 --out $@

test: install install-suites
	$(PY) -m pytest -q tests

# The sweep on a real Slurm cluster, requeue included (tests/test_slurm.py): a failure, not a skip, when
# no cluster answers. `scripts/slurm_cluster.sh start` starts the one-node test cluster it defaults to.
LSPC_SLURM_DIR ?= /tmp/lspc-slurm
test-slurm: install
	SLURM_CONF=$${SLURM_CONF:-$(LSPC_SLURM_DIR)/slurm.conf} LSPC_REQUIRE_SLURM=1 $(PY) -m pytest -q tests/test_slurm.py

clean-venv:
	rm -rf $(VENV)
