# Two commands on a fresh machine: `make demo` runs the whole pipeline, `make test` runs the tests.
# Both install what they need into a local virtual environment (.venv) first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch (on this kind of machine pip finds it locally); override for CUDA machines.
TORCH ?= torch==2.13.0
TASKS ?= 12
EVAL_TASKS ?= 6
SERVICES := router teacher judge editor trainer evaluator
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench bench-distilabel up down clean record experiment

install: $(STAMP)

$(STAMP): shared/pyproject.toml cli/pyproject.toml $(foreach s,$(SERVICES),services/$(s)/pyproject.toml) requirements/constraints.txt requirements/data.txt examples/custom_unit/plugin/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements/constraints.txt "$(TORCH)"
	$(PY) -m pip install -q -c requirements/constraints.txt -e "shared[ml,grpc,dev]" -e cli $(foreach s,$(SERVICES),-e services/$(s))
	$(PY) -m pip install -q --no-deps -r requirements/data.txt
	# the custom-unit example's plugin (a team's own metric, found by entry point; its tests use it)
	$(PY) -m pip install -q --no-deps -e examples/custom_unit/plugin
	touch $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/distillery demo --tasks $(TASKS) --eval-tasks $(EVAL_TASKS)

# The curated-vs-naive experiment (README): its folder holds the spec, the workload and the recording.
EXPERIMENT ?= experiments/tool-calling
EXPERIMENT_ARGS ?=

# Record the real teachers once over the experiment's workload (resumable; about an hour on 2 cores).
record: install
	HF_HUB_OFFLINE=1 $(PY) -m distillery_teacher.record --spec $(EXPERIMENT)/spec.yaml \
		--workload $(EXPERIMENT)/workload.jsonl --out $(EXPERIMENT)/recording.jsonl

# Replay the recording through the six services, train every variant x seed, write results.json.
experiment: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/distillery experiment $(EXPERIMENT) $(EXPERIMENT_ARGS)

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# The fast lane: the `unit` tier (no broker, no model; tiers in pytest.ini and tests/conftest.py).
test-fast: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m unit

# ruff (rules chosen in ruff.toml) and the layering contracts (.importlinter); .ci/run runs this first.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: install
	$(PY) bench/pipeline_throughput.py
	$(PY) bench/bus_hop.py
	$(PY) bench/judge_throughput.py
	$(PY) bench/editor_throughput.py
	$(PY) bench/editor_dedup.py
	$(PY) bench/trainer_throughput.py
	$(PY) bench/restart_state.py

# distilabel 1.5.3 in its own venv, for `bench/pipeline_throughput.py --against-distilabel` (issue 17).
# datasketch stays on 1.7.0: distilabel's MinHashDedup breaks on datasketch 2.x.
DISTILABEL_VENV ?= .venv-distilabel
DISTILABEL_STAMP := $(DISTILABEL_VENV)/.installed

bench-distilabel: $(DISTILABEL_STAMP)

$(DISTILABEL_STAMP):
	$(PYTHON) -m venv $(DISTILABEL_VENV)
	$(DISTILABEL_VENV)/bin/python -m pip install -q --upgrade pip
	$(DISTILABEL_VENV)/bin/python -m pip install -q "distilabel==1.5.3" "datasketch==1.7.0" requests
	touch $(DISTILABEL_STAMP)

up: install
	$(VENV)/bin/distillery up

down:
	$(VENV)/bin/distillery down

clean:
	rm -rf $(VENV) .distillery

# Python protobuf/gRPC modules for proto/distill/v1 into shared/distillery/contracts/grpc_gen (committed;
# tests/unit/test_grpc_generated.py fails when they are stale). See cli/distillery_gen/grpc.py.
.PHONY: proto
proto: install
	$(PY) -m distillery_gen.grpc
