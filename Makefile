# tlcourse: the two commands a newcomer needs are `make lab` and `make test`.
# Both create .venv (if missing) and install everything into it first.
#
# Settings (environment variables, see README): TLCOURSE_DATA, TLCOURSE_FIELD_TEST, TLCOURSE_BACKBONE,
# TLCOURSE_OUTPUT, TLCOURSE_SMOKE, TLCOURSE_SEED, TLCOURSE_DEVICE, TORCH_HOME. Given on make's command
# line (`make lab TLCOURSE_DATA=~/my_photos`) they reach JupyterLab and the tests too.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The versions CI is pinned to (and that are known to work). Override for another platform, e.g.
#   make lab TORCH_PIN="torch==2.9.1 torchvision==0.24.1"
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
DATA ?= $(or $(TLCOURSE_DATA),data)
FIELD_TEST ?= $(or $(TLCOURSE_FIELD_TEST),field-test)

# Where torch comes from. On Linux, PyPI's torch is the CUDA build, which with its nvidia-* libraries
# is about 3 GB to download; PyTorch's CPU-only index has the same versions without CUDA. So on Linux
# without an NVIDIA driver the default is TORCH_INDEX=cpu; TORCH_INDEX=default takes the default index
# (PyPI) everywhere. When the CPU index does not answer within TORCH_INDEX_TIMEOUT seconds, the
# install says so in one line and takes the default index.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX_TIMEOUT ?= 5
ifeq ($(origin NVIDIA_DRIVER),undefined)
NVIDIA_DRIVER := $(shell { command -v nvidia-smi || ls -d /proc/driver/nvidia; } >/dev/null 2>&1 && echo yes)
endif
ifeq ($(origin OS_NAME),undefined)
OS_NAME := $(shell uname -s 2>/dev/null)
endif
TORCH_INDEX ?= $(if $(and $(filter Linux,$(OS_NAME)),$(if $(NVIDIA_DRIVER),,none)),cpu,default)

# Exit 0 when the URL (argv[1]) answers within argv[2] seconds. The thread bounds a hanging name lookup
# too, which urlopen's timeout does not cover; os._exit leaves without waiting for it.
define TORCH_INDEX_PROBE
import os, sys, threading, urllib.request
answered = []
def probe():
    try:
        urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).close()
        answered.append(True)
    except Exception:
        pass
worker = threading.Thread(target=probe, daemon=True)
worker.start()
worker.join(float(sys.argv[2]))
os._exit(0 if answered else 1)
endef
export TORCH_INDEX_PROBE

.PHONY: setup lab test smoke data doctor bench bench-recipes bench-cut bench-train bench-lessons bench-dashboard figures clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	@if [ "$(TORCH_INDEX)" != cpu ]; then \
		echo "Installing $(TORCH_PIN) from the default index"; \
		$(BIN)/python -m pip install --quiet $(TORCH_PIN); \
	elif $(BIN)/python -c "$$TORCH_INDEX_PROBE" "$(TORCH_CPU_INDEX)/" $(TORCH_INDEX_TIMEOUT); then \
		echo "Installing $(TORCH_PIN) from PyTorch's CPU-only index $(TORCH_CPU_INDEX) (no NVIDIA GPU found)"; \
		$(BIN)/python -m pip install --quiet --index-url $(TORCH_CPU_INDEX) $(TORCH_PIN) || { \
			echo "Installing from $(TORCH_CPU_INDEX) failed; to take the default index instead: make $(MAKECMDGOALS) TORCH_INDEX=default" >&2; \
			exit 1; }; \
	else \
		echo "PyTorch's CPU-only index $(TORCH_CPU_INDEX) cannot be reached: installing $(TORCH_PIN) from the default index (the CUDA build on Linux, about 3 GB)"; \
		$(BIN)/python -m pip install --quiet $(TORCH_PIN); \
	fi
	$(BIN)/python -m pip install --quiet -e ".[lab,test]" $(TORCH_PIN)
	touch $@

setup: $(VENV)/.installed ## create .venv and install the course into it

# The photos and the field test, each unless its folder is already filled (TLCOURSE_DATA and
# TLCOURSE_FIELD_TEST may point at filled folders). Without the field test the lessons still run (they
# say so and use validation photos instead), so a failed field-test download only prints how to retry.
data: setup ## download the example photos into data/ and the field test into field-test/
	@if [ -d "$(DATA)" ] && [ -n "$$(ls -A "$(DATA)" 2>/dev/null)" ]; then \
		echo "Photos found in $(DATA)"; \
	else \
		$(BIN)/tlcourse download-data --only photos --dest "$(DATA)" --field-test-dest "$(FIELD_TEST)"; \
	fi
	@if [ -d "$(FIELD_TEST)" ] && [ -n "$$(ls -A "$(FIELD_TEST)" 2>/dev/null)" ]; then \
		echo "Field test found in $(FIELD_TEST)"; \
	else \
		$(BIN)/tlcourse download-data --only field-test --dest "$(DATA)" --field-test-dest "$(FIELD_TEST)" || \
		echo "The field test was not downloaded; the lessons go on without it. Run make data again to retry."; \
	fi

doctor: setup ## check this machine for the course: versions, device, photos, cached weights
	$(BIN)/tlcourse doctor

# Jupyter refuses to run as root (containers, some CI machines) unless told it is on purpose.
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)

lab: data ## set everything up and open the course in JupyterLab
	$(BIN)/jupyter lab $(LAB_FLAGS) notebooks/

test: data ## set everything up and run the whole test suite, lessons included
	$(BIN)/python -m pytest

smoke: data ## quick run: tests and lessons on a small subset
	TLCOURSE_SMOKE=1 $(BIN)/python -m pytest -m "not slow"

bench: data ## print the speed benchmark table (~15 min; `make bench BENCH_ARGS=--quick`: ~3 min check)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

bench-recipes: data ## compare the recipes on validation, test split and field test, and choose the views (~10 min)
	$(BIN)/python benchmarks/recipes.py $(BENCH_ARGS)

bench-cut: data ## where to cut: the recipes on several seeds, chosen on validation (~35 min; BENCH_ARGS=--quick: ~5 min)
	$(BIN)/python benchmarks/cut.py $(BENCH_ARGS)

bench-train: data ## cold `tlcourse train`: the default beside the other recipes, with ratios and peak memory (~8 min)
	$(BIN)/python benchmarks/train_cold.py $(BENCH_ARGS)

bench-lessons: data ## each lesson's Run All, empty cache and warm, against its Time line (~15 min; BENCH_ARGS=--update rewrites them)
	$(BIN)/python benchmarks/lessons.py $(BENCH_ARGS)

bench-dashboard: data ## print the live dashboard's cost, side by side with no dashboard (10+ min)
	$(BIN)/python benchmarks/dashboard_overhead.py

figures: setup ## redraw the lessons' figures in images/
	$(BIN)/python images/make_figures.py

clean-venv:
	rm -rf $(VENV)
