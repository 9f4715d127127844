# Two commands: `make run` (retrain the three models, rewrite Images/ and the notebook's
# outputs) and `make test` (the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: run test benchmark clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run-installed: requirements.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# Executes the notebook top to bottom in place; nbconvert writes it only if every cell ran.
run: $(VENV)/.run-installed
	$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=-1 S6_Normalization.ipynb

test: $(VENV)/.dev-installed
	$(PY) -m pytest -q tests

benchmark: $(VENV)/.run-installed
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) .pytest_cache __pycache__ tests/__pycache__
