# The two set-up commands: `make figures` and `make test`. Both create .venv from requirements.txt if missing.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
MNIST_PATH ?= ../shared/data/mnist
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

models: $(VENV)/.installed
	MNIST_PATH=$(MNIST_PATH) $(PYTHON) train_twoclass.py
	MNIST_PATH=$(MNIST_PATH) $(PYTHON) train_multiclass.py
	MNIST_PATH=$(MNIST_PATH) $(PYTHON) train_cnn_simple.py

bench: $(VENV)/.installed
	$(PYTHON) benchmarks/bench_core.py

clean-venv:
	rm -rf $(VENV)
