.PHONY: help install test test-fast test-latest lock demo shards bench lint

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install:  ## venv + editable install of the locked, tested set (requirements/lock.txt)
	python3 -m venv .venv && .venv/bin/pip install -q -c requirements/lock.txt -e '.[dev]'

test:  ## the full test suite (what CI runs)
	.venv/bin/python -m pytest -q

test-fast:  ## unit tests only (no integration, no slow)
	.venv/bin/python -m pytest -q -m "not slow and not integration"

test-latest:  ## drift check: newest versions the ranges admit, in a throwaway venv, fast tests
	scripts/deps.sh latest

lock:  ## re-resolve the ranges and rewrite requirements/lock.txt (then run make test)
	scripts/deps.sh lock

demo:  ## the main job: the mini world end to end (paras2s demo)
	.venv/bin/paras2s demo

shards:  ## build the mini-world shards only
	.venv/bin/paras2s shards build-demo --out shards/demo

bench:  ## shard read throughput on the demo shards
	.venv/bin/python benchmarks/shard_read.py --root shards/demo --split train

lint:  ## ruff
	.venv/bin/ruff check paras2s_pl tests benchmarks scripts
