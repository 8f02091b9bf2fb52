.PHONY: help install test demo bench lint

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

install:  ## venv + editable install with test extras
	python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]'

test:  ## the full test suite (what CI runs)
	.venv/bin/python -m pytest -q

demo:  ## build the mini-world shards
	.venv/bin/paras2s shards build-demo --out shards/demo

bench:  ## shard read throughput on the demo shards
	.venv/bin/python benchmarks/shard_read.py --root shards/demo --split train

lint:  ## ruff
	.venv/bin/ruff check paras2s_pl tests benchmarks
