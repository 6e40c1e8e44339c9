# seg2med — two set-up commands: `make demo` and `make test` (see README.md)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean bench

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps piq==0.8.0 torch-fidelity==0.4.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/seg2med demo --out demo-out --convert --brain --overwrite

test: $(STAMP)
	bash .ci/run-tests

bench: $(STAMP)
	$(PY) benchmarks/prior_speed.py

clean:
	rm -rf $(VENV) demo-out build *.egg-info src/*.egg-info
