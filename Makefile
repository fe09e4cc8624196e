# adpipe: the documented entry points. Run `make help` for the list.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help up demo down status test test-prereqs test-durable test-chaos test-reliability fmt fmt-check lint unit bench

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

up: ## start the local broker and schema registry, apply topics and schemas
	@scripts/platform.sh up

demo: ## the pipeline on local defaults: platform, stages, simulated reports, a live view
	@scripts/platform.sh demo

down: ## stop what `make up` started
	@scripts/platform.sh down

status: ## what runs, and how topics and schemas differ from the tree
	@scripts/platform.sh status

test: test-prereqs fmt-check lint schema-gate unit ## the full gate: formatting, clippy -D warnings, the schema gate, every test

.PHONY: schema-gate
schema-gate: ## schemas/ must stay FULL_TRANSITIVE compatible with every committed version (offline)
	$(CARGO) run -q --locked -p pipelinectl -- schemas check --history

test-prereqs: ## install what the tests start (Tansu broker, Python registry client) into .local/
	@scripts/test-prereqs.sh

test-durable: ## on a durable broker: records and a running stage survive SIGKILL + restart; SCRAM logins, over TLS too (builds Tansu, ~11 min; CI runs it)
	@scripts/install-tansu.sh --durable
	$(CARGO) test -p testkit -p silver --test durable_broker -- --ignored --nocapture

test-chaos: test-prereqs ## SIGKILL random stages of a seeded run; its end state must equal a calm run's, each alert in its org's inbox once (~2 min)
	$(CARGO) build --bin connector --bin bronze --bin silver --bin gold --bin rule-evaluator --bin notification-sender --bin audit-writer
	$(CARGO) test -p pipeline-tests --test chaos -- --ignored --nocapture

test-reliability: test-prereqs ## ~1,000,000 simulated rows through the release stages: nothing lost, RSS and lag printed (~25 min; CI runs it)
	$(CARGO) build --profile bench --bin connector --bin bronze --bin silver --bin gold --bin rule-evaluator --bin notification-sender --bin audit-writer
	$(CARGO) test -p pipeline-tests --test reliability -- --ignored --nocapture

fmt: ## format the workspace
	$(CARGO) fmt --all

fmt-check: ## fail on unformatted code
	$(CARGO) fmt --all --check

lint: ## clippy on every target, warnings are errors
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit: ## run every test (cargo nextest when installed, else cargo test)
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --locked --no-fail-fast; \
	else \
		$(CARGO) test --workspace --locked --no-fail-fast; \
	fi

bench: test-prereqs ## every benchmark beside a baseline of the same run; rewrites BENCHMARKS.md (~18 min from a cold clone, build included)
	@scripts/bench.sh
