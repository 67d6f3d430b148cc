# Two entry points: `make run` (the main job) and `make test`. Both create the virtualenv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test bench clean

setup: $(STAMP)

# CPU torch first: a bare torch requirement would otherwise pull a multi-GB CUDA build.
# --no-compile: byte-compiling every installed module took ~35 of the install's ~85 s; Python
# compiles the few it imports on first use instead.
$(STAMP): pyproject.toml scripts/system-deps.sh
	bash scripts/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-compile torch==2.13.0
	$(BIN)/python -m pip install -q --no-compile -e ".[dev]"
	touch $@

# A few flywheel cycles of the default task on an embedded Ray, from the pretrained
# checkpoint (a small one is pretrained first when there is none).
run: setup
	$(BIN)/flywheel run

# Bytecode cached (whatever the environment says): every Ray actor the tests start imports our
# packages again, and would compile them again each time.
test: setup
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest -q -n 2

# The benchmarks also need the [bench] extra (stable-baselines3, for the SAC baseline).
bench: setup
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/bench_sims.py
	$(BIN)/python benchmarks/bench_mot.py
	$(BIN)/python benchmarks/bench_world_model.py
	$(BIN)/python benchmarks/bench_flywheel.py
	$(BIN)/python benchmarks/bench_capability.py

clean:
	rm -rf $(VENV)
