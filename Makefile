# The verbs of the orders platform. `make demo` and `make test` are the two a new
# user needs; both install and start what they need (see README.md).

SHELL := /bin/bash
.DEFAULT_GOAL := help

# Build cache outside the clone: fresh clones (CI) reuse what earlier builds compiled.
# deploy/local/target-dir.sh is the one place that decides it; the scripts ask it too.
export CARGO_TARGET_DIR := $(shell deploy/local/target-dir.sh)
CARGO ?= cargo
# Integration tests mostly wait on processes and servers: run more of them at once than there are cores.
TEST_THREADS ?= 8

BENCH_REPORT ?= $(CURDIR)/.local/bench/report.md

.PHONY: print-target-dir help toolchain up down status build run stop demo test fmt lint bench chart-test compose-test observability-test api-test security-test images k8s-test chaos fuzz

help: ## list the verbs
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

print-target-dir:
	@echo $(CARGO_TARGET_DIR)

toolchain:
	@command -v $(CARGO) >/dev/null || { echo "Rust is missing: install it with rustup (https://rustup.rs), then run make again" >&2; exit 1; }

up: ## start the local Kafka and PostgreSQL (installing them when missing)
	deploy/local/infra.sh up

down: stop ## stop the services, Kafka and PostgreSQL started by this project
	deploy/local/infra.sh down

status: ## what runs, where, and where its log is
	-deploy/local/infra.sh status
	-deploy/local/services.sh status

build: toolchain ## build the five service binaries
	$(CARGO) build --workspace --bins

run: up build ## start the five services in the background (logs in .local/services)
	deploy/local/services.sh start

stop: ## stop the services gracefully
	deploy/local/services.sh stop

demo: run ## the main job: infrastructure up, services running, results shown
	deploy/local/demo.sh

fmt: toolchain
	$(CARGO) fmt --all

lint: toolchain ## format check and clippy with warnings as errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

test: up lint chart-test compose-test observability-test api-test security-test ## everything the tests need, then format check, clippy, the chart's, compose.yaml's, the alerts', the APIs' and the secured flow's checks, and every test
	$(CARGO) test --workspace --locked -- --test-threads=$(TEST_THREADS)

api-test: up toolchain ## the services' /openapi.json validated, and Schemathesis fuzzing the running APIs against them
	deploy/api/test.sh

security-test: up toolchain ## the five services secured end to end (Kafka SASL_SSL with ACLs, PostgreSQL TLS with a role each), forbidden accesses refused, no secret in the logs
	deploy/security/test.sh

fuzz: ## cargo-fuzz on the Kafka envelopes' decoders and the HTTP JSON bodies, FUZZ_SECONDS (60) each (installs nightly and cargo-fuzz on first use)
	deploy/fuzz/run.sh

compose-test: ## compose.yaml: loaded as Docker Compose does (schema, merges, dependencies), then its promises
	deploy/compose/test.sh

observability-test: ## the alert rules (promtool check and unit tests), the dashboard's and the rules' metrics
	deploy/observability/test.sh

images: toolchain ## the five service images, with podman from the release binaries (offline: a base made from Debian's packages), then checked
	deploy/local/images.sh build
	deploy/local/images.sh check

chart-test: ## the Helm chart: lint, render, validate against Kubernetes' schemas, its promises (installs helm on first use)
	k8s/test.sh

k8s-test: up images ## the rendered chart played with podman against the local Kafka and PostgreSQL: migrations, readiness, orders end to end
	k8s/play.sh

chaos: up toolchain ## the services under load while each is SIGKILLed, then Kafka and PostgreSQL, with poison on the topics; then the reconciliation (report in .local/chaos/; PROFILE=release for the release build)
	$(CARGO) build --workspace --bins $(if $(filter release,$(PROFILE)),--release)
	deploy/chaos/run.sh

bench: up toolchain ## the benchmarks, each beside its baseline measured in the same run, then the five services end to end at 1,000 orders/s; report and charts in .local/bench/
	mkdir -p $(dir $(BENCH_REPORT))
	printf '# Benchmark report\n\nMachine: %s cores, %s. Commit %s.\n\n' "$$(nproc)" "$$(date -u +%F)" "$$(git rev-parse --short HEAD)" > $(BENCH_REPORT)
	BENCH_REPORT=$(BENCH_REPORT) $(CARGO) bench --workspace --locked --benches
	BENCH_REPORT=$(BENCH_REPORT) deploy/bench/e2e.sh
	@echo "report: $(BENCH_REPORT)"
