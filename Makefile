# The README's two commands: `make demo` (the main job) and `make test` (every test, notebooks included).
# Both create or reuse a local virtualenv in .venv and install what they need into it.
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is installed first and only when missing: pick a build, e.g. `make demo TORCH=torch==2.13.0`
TORCH  ?= torch
STAMP  := $(VENV)/.mariofm-installed

.PHONY: demo test lint lab notebooks mutation clean-outputs

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: $(STAMP)
	$(PY) -m mariofm demo

lint: $(STAMP)
	$(PY) -m ruff check .

test: lint
	MARIOFM_SMOKE=1 $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider

# Mutation testing of the core modules (not part of `make test`: ~15 minutes on 2 cores). Starts afresh, so
# the table reflects the tests as they are now; the result and the equivalent mutants are in docs/testing.md.
mutation: $(STAMP)
	$(PY) -c "import mutmut" 2>/dev/null || $(PY) -m pip install -q "mutmut>=3.8,<4"
	$(PY) docs/mutation_report.py --run

# sync notebooks/NN_name.py -> .ipynb, run each top to bottom in a fresh kernel (full settings unless
# MARIOFM_SMOKE=1; data from data_video/mario or MARIOFM_DATA) and nbstripout it: the stored outputs
notebooks: $(STAMP)
	$(PY) notebooks/run_notebooks.py

lab: $(STAMP)
	$(PY) -m jupyter lab notebooks

clean-outputs:
	rm -rf outputs
