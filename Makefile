# The two set-up commands: `make figures` and `make test`. Both create .venv from requirements.txt if missing.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
export KERAS_HOME ?= $(CURDIR)/.keras_home
export TF_CPP_MIN_LOG_LEVEL := 3

.PHONY: test figures models bench clean-venv

$(VENV)/.installed: requirements.txt
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

test: $(VENV)/.installed
	$(PYTHON) -m pytest -q tests

figures: $(VENV)/.installed
	$(PYTHON) make_figures.py

# MNIST_PATH=/path/to/mnist (IDX files or mnist.npz) trains on full MNIST; without it, see data.py's fallbacks
ifdef MNIST_PATH
export MNIST_PATH
endif
models: $(VENV)/.installed
	$(PYTHON) train_twoclass.py
	$(PYTHON) train_multiclass.py
	$(PYTHON) train_cnn_simple.py
	$(PYTHON) binary.py train

bench: $(VENV)/.installed
	$(PYTHON) benchmarks/bench_core.py

clean-venv:
	rm -rf $(VENV)
