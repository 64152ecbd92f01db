# fedmllm — two set-up commands: `make demo` and `make test` (each installs into .venv first).
# The CPU torch pinned below installs from a local file on our machines; an unpinned torch would
# pull several GB of CUDA. On a GPU machine: make install TORCH_SPEC=torch (or your CUDA build).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedmllm-installed
DEMO_OUT ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install test demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/fedmllm demo --out $(DEMO_OUT)

bench: install
	$(PY) benchmarks/eval_throughput.py
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/federated_overhead.py
	$(PY) benchmarks/client_scaling.py

clean:
	rm -rf $(VENV) runs .pytest_cache
