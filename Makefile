# `make test` and `make demo` create .venv when missing and install what they need.
# Where no GPU is present, torch's CPU build goes in first. On this project's machines the package index serves the
# CPU build as torch==2.13.0; elsewhere point TORCH_CPU at PyTorch's CPU index, e.g.
#   make test TORCH_CPU="torch --index-url https://download.pytorch.org/whl/cpu"
# GPU users keep their own torch: `pip install -e ".[dev]"` never replaces an installed torch that satisfies it.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
TORCH_CPU ?= torch==2.13.0
STAMP := $(VENV)/.hfvision-installed
# Debian packages that ship offline data used by tests and the demo (see shared DATA.md).
DATA_DEBS := tuxpaint-stamps-default dataset-fashion-mnist

.PHONY: install data check-data test test-slow demo lint

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(PYTHON) -c "import torch" 2>/dev/null; then \
		$(PYTHON) -m pip install -q $(TORCH_CPU); fi
	$(PYTHON) -m pip install -q -e ".[dev]"
	# The open_clip wheel only for its CLIP BPE vocabulary file; its dependencies would pull a multi-GB torch.
	$(PYTHON) -m pip install -q --no-deps open_clip_torch
	touch $(STAMP)

install: $(STAMP)

MISSING_DEBS = $$(for p in $(DATA_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done)

# `make data` is the only target that installs system packages (apt-get, as root, asked for by name).
data:
	@missing="$(MISSING_DEBS)"; \
	if [ -z "$$missing" ]; then echo "data packages installed: $(DATA_DEBS)"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "apt-get install -y $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "run as root: apt-get install -y $$missing"; exit 1; fi

# `make test` / `make demo` only say what is missing and how to get it.
check-data:
	@missing="$(MISSING_DEBS)"; \
	if [ -n "$$missing" ]; then \
		echo "Optional data packages missing (the tests and demos that read them skip or stop): make data, or"; \
		echo "  sudo apt-get install -y $$missing"; fi

test: install check-data
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(PYTHON) -m pytest -q

test-slow: install check-data
	$(PYTHON) -m pytest -q -m slow

# One method's demo: train briefly -> evaluate -> model card -> publish to the local Hub -> load back by repo id.
#   make demo                 PyramidCLIP (pretraining with accelerate, zero-shot eval)
#   make demo DEMO=<method>   any method with a training/demo_<method>.py
DEMO ?= pyramidclip
demo: install check-data
	$(PYTHON) training/demo_$(DEMO).py --output_dir runs/demo_$(DEMO)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
