# Two commands: `make run` (train the three models through the notebook, rewrite Images/notebook/,
# the notebook's outputs and the README's generated sections) and `make test` (the test suite).
# Both create .venv on first use, and make it anew if it is broken.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# TORCH=cpu installs PyTorch's CPU-only wheels (about 0.9 GB instead of several GB with CUDA
# libraries) from PyTorch's own index, for machines that can reach it: make run TORCH=cpu
TORCH  ?=
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu

# A venv whose python cannot run pip (a failed or interrupted creation) is removed here, so
# that the rules below create it again.
ifneq ($(shell $(PY) -m pip --version >/dev/null 2>&1 && echo ok),ok)
$(shell rm -rf $(VENV))
endif

.PHONY: run test studies benchmark readme clean

$(PY):
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "creating $(VENV) failed: Python 3.9+ with venv is needed (Debian/Ubuntu: apt install python3-venv)"; exit 1; }

$(VENV)/.run-installed: requirements.txt | $(PY)
ifeq ($(TORCH),cpu)
	$(PY) -m pip install -q --index-url $(TORCH_CPU_INDEX) torch torchvision
endif
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev-installed: $(VENV)/.run-installed requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# The notebook runs into a folder of its own; only once every cell has run do the notebook,
# Images/notebook/ and the README change, together (run_notebook.py). One make run at a time.
run: $(VENV)/.run-installed
	$(PY) run_notebook.py

test: $(VENV)/.dev-installed
	$(PY) -m pytest -q tests

# The many-seed studies behind the README's tables (minutes on a GPU, hours on a 2-core CPU;
# finished runs are kept in runs/, so an interrupted study resumes).
studies: $(VENV)/.run-installed
	$(PY) -m studies.seeds
	$(PY) -m studies.batch_size
	$(PY) -m studies.shift
	$(PY) -m studies.adabn
	$(PY) report.py

benchmark: $(VENV)/.run-installed
	$(PY) -m benchmarks.speed

readme: $(VENV)/.run-installed
	$(PY) report.py

clean:
	rm -rf $(VENV) .pytest_cache __pycache__ tests/__pycache__
