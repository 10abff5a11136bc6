# The two README commands: `make demo` (train + evaluate LSPC on BallRun, CPU, a few minutes)
# and `make test`. Every target creates/reuses .venv in the repo and installs the pinned requirements.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUITES_STAMP := $(VENV)/.installed-suites
COLLECT_STAMP := $(VENV)/.installed-collect

.PHONY: help install install-suites install-collect install-dev demo test test-slurm datasets mutation docs clean-venv gpu-bundle gpu-rehearsal

install: $(STAMP)  ## the core: .venv with torch, dsrl, osrl-lib, Bullet Safety Gym

# Python 3.11 is what CI tests. pybullet 3.2.7 has no wheel for 3.12 or newer: BUILD_PYBULLET=1 lets pip build
# it from source (measured in results/pybullet_source_build.csv).
BUILD_PYBULLET ?=
$(STAMP): requirements.txt requirements-nodeps.txt
	@v=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])') || exit 2; \
	case "$$v" in \
	    3.11) ;; \
	    3.[0-9]|3.10) echo "error: make install needs Python 3.11 (it has $(PYTHON) = Python $$v); use PYTHON=python3.11" >&2; exit 2 ;; \
	    *) [ "$(BUILD_PYBULLET)" = 1 ] || { echo "error: pybullet 3.2.7, the Bullet tasks' simulator, has no wheel for Python $$v ($(PYTHON)); use PYTHON=python3.11, or build it from source with make install PYTHON=$(PYTHON) BUILD_PYBULLET=1 (about 4 minutes on 2 cores; needs g++ and Python $$v's headers; docs/installation.md)" >&2; exit 2; } ;; \
	esac
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# dsrl and osrl-lib pin torch~=1.13 / wandb~=0.14 / protobuf~=3.19: not installable on 3.11
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

# Safety-Gymnasium and MetaDrive (about 450 MB more); the tests cover them, the demo does not need them.
install-suites: $(SUITES_STAMP)  ## Safety-Gymnasium and MetaDrive

$(SUITES_STAMP): $(STAMP) requirements-suites.txt requirements-suites-nodeps.txt
	$(PY) -m pip install --quiet -r requirements-suites.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-suites-nodeps.txt
	touch $(SUITES_STAMP)

# FSRL's safe-RL agents (tianshou, numba), for datasets of tasks without a controller (--behaviour fsrl).
install-collect: $(COLLECT_STAMP)  ## FSRL's agents, to collect datasets of tasks without a controller

$(COLLECT_STAMP): $(STAMP) requirements-collect.txt
	$(PY) -m pip install --quiet -r requirements-collect.txt
	touch $(COLLECT_STAMP)

# Developer tools (mutmut for `make mutation`); not needed by `make test`.
DEV_STAMP := $(VENV)/.installed-dev

install-dev: $(DEV_STAMP)  ## developer tools: mutation testing, MkDocs

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(DEV_STAMP)

demo: install  ## train and evaluate LSPC on BallRun on the CPU, a few minutes
	PYTHON=$(PY) bash scripts/demo.sh

# Offline datasets from the simulators (DSRL layout + dataset card) into DATA_DIR; existing files are kept.
# TASKS names others, e.g. `make datasets TASKS="OfflineDroneRun-v0"`: tasks without a controller get
# FSRL behaviour agents (trained once, cached in ~/.lspc/agents) and need `make install-collect`; their
# settings default to the task's entry in lspc.data.behaviour.TASK_COLLECTION (docs/data.md's datasets).
# DATASET_EPISODES sets --episodes (default 600, or the task's entry); COLLECT_FLAGS passes more flags,
# e.g. COLLECT_FLAGS="--agent_steps 1000000 --cost_limits 5 20 80".
DATA_DIR ?= $(HOME)/.lspc/datasets
DATASET_TASKS := OfflineBallRun-v0 OfflineCarRun-v0 OfflineBallCircle-v0 OfflineCarCircle-v0
TASKS ?= $(DATASET_TASKS)
DATASET_EPISODES ?=
COLLECT_FLAGS ?=

datasets: $(foreach task,$(TASKS),$(DATA_DIR)/$(task).hdf5)  ## collect datasets into DATA_DIR (TASKS=...)

$(DATA_DIR)/%.hdf5: | $(STAMP) $(if $(filter-out $(DATASET_TASKS),$(TASKS)),$(COLLECT_STAMP))
	$(PY) scripts/collect_dataset.py --task $* $(if $(DATASET_EPISODES),--episodes $(DATASET_EPISODES)) --seed 0 --out $@ $(COLLECT_FLAGS)

# The offline GPU node (docs/gpu.md): the bundle it needs (wheels for BUNDLE_PYTHON, the BallRun file, run.sh),
# and the node rehearsed on the CPU (tools/gpu_node/rehearse.sh; .ci/run calls it).
BUNDLE_PYTHON ?= 3.12
BUNDLE_DIR ?= gpu_bundle
gpu-bundle: install  ## the offline GPU node's bundle into gpu_bundle/ (BUNDLE_PYTHON=3.12)
	$(PY) tools/gpu_node/bundle.py build --python $(BUNDLE_PYTHON) --out $(BUNDLE_DIR)

gpu-rehearsal: install  ## the GPU node rehearsed on the CPU: node-like venv, bundle, run.sh --cpu, evaluation here
	bash tools/gpu_node/rehearse.sh

test: install install-suites install-collect  ## install every suite and run the test suite
	$(PY) -m pytest -q -n auto --dist loadfile tests

# The sweep on a real Slurm cluster, requeue included (tests/test_slurm.py): a failure, not a skip, when
# no cluster answers. `scripts/slurm_cluster.sh start` starts the one-node test cluster it defaults to.
LSPC_SLURM_DIR ?= /tmp/lspc-slurm
test-slurm: install  ## the sweep on a real Slurm cluster (scripts/slurm_cluster.sh start)
	SLURM_CONF=$${SLURM_CONF:-$(LSPC_SLURM_DIR)/slurm.conf} LSPC_REQUIRE_SLURM=1 $(PY) -m pytest -q tests/test_slurm.py

# Mutation testing of the algorithm files against their fast tests (scripts/mutation.py; a long run,
# resumable), then the report in results/mutation/. MUTATE names
# some, e.g. `make mutation MUTATE="lspc/data/dataset.py lspc/evaluation.py"`; MUTATION_JOBS files are
# mutated at once, one core each; niced so that other work keeps its cores.
MUTATE ?=
MUTATION_JOBS ?= 1
mutation: install install-suites install-dev  ## mutation testing of the algorithm files (MUTATE=..., MUTATION_JOBS=N)
	nice -n 10 $(PY) scripts/mutation.py run $(MUTATE) --jobs $(MUTATION_JOBS)

# The documentation site (mkdocs.yml; tables inserted from results/ and the code by tools/docs_hooks.py).
docs: install-dev  ## build the documentation into site/ (mkdocs build --strict)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

help:  ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

clean-venv:  ## remove .venv
	rm -rf $(VENV)
