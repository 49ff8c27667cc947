# tlcourse: the two commands a newcomer needs are `make lab` and `make test`.
# Both create .venv (if missing) and install everything into it first.
#
# Settings (environment variables, see README): TLCOURSE_DATA, TLCOURSE_BACKBONE,
# TLCOURSE_OUTPUT, TLCOURSE_SMOKE, TLCOURSE_SEED, TLCOURSE_DEVICE, TORCH_HOME.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The versions CI is pinned to (and that are known to work). Override for another platform, e.g.
#   make lab TORCH_PIN="torch==2.9.1 torchvision==0.24.1"
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
DATA ?= $(or $(TLCOURSE_DATA),data)

.PHONY: setup lab test smoke data bench bench-recipes bench-dashboard figures clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e ".[lab,test]" $(TORCH_PIN)
	touch $@

setup: $(VENV)/.installed ## create .venv and install the course into it

data: setup ## download the example photos into data/ unless TLCOURSE_DATA points at them
	@if [ -d "$(DATA)" ] && [ -n "$$(ls -A "$(DATA)" 2>/dev/null)" ]; then \
		echo "Photos found in $(DATA)"; \
	else \
		$(BIN)/tlcourse download-data --dest "$(DATA)"; \
	fi

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

bench-dashboard: data ## print the live dashboard's cost, side by side with no dashboard (10+ min)
	$(BIN)/python benchmarks/dashboard_overhead.py

figures: setup ## redraw the lessons' figures in images/
	$(BIN)/python images/make_figures.py

clean-venv:
	rm -rf $(VENV)
