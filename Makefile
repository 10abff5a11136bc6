# The two README commands: `make demo` (train + evaluate LSPC on BallRun, CPU, a few minutes)
# and `make test`. Both create/reuse .venv in the repo and install the pinned requirements.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test clean-venv

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

test: install
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
