# HyperSync — see README.md. `make run` starts a local cluster and runs the demo;
# `make test` runs every test. Both install missing system packages first.

# One target directory outside the clone, one profile (release) for the binaries, the
# tests and the benchmarks: RocksDB's C++ is built once and reused by every run.
CARGO_TARGET_DIR ?= $(HOME)/.cache/hsync/target
export CARGO_TARGET_DIR
CARGO ?= cargo
BIN := $(CARGO_TARGET_DIR)/release
STATE ?= .hsync

.PHONY: run test deps build stop status bench lint fmt clean-state

deps:
	@./scripts/install-deps.sh

# Always the same package selection and targets: a different selection can unify build
# dependency features differently and make cargo rebuild RocksDB.
build: deps
	$(CARGO) build --release --workspace --all-targets

## Starts nats-server + the five services in the background, runs examples/jobs, prints
## their results and one receipt verified offline. Leaves the cluster running: `make stop`.
run: build
	@$(BIN)/hsync down --dir $(STATE) >/dev/null 2>&1 || true
	$(BIN)/hsync up --detach --dir $(STATE)
	$(BIN)/hsync demo --jobs examples/jobs --key $(STATE)/signer/signer.vkey
	@echo
	@echo "The cluster is still running (NATS on nats://127.0.0.1:4222, logs in $(STATE)/logs)."
	@echo "Try: $(BIN)/hsync status    Stop it: make stop"

## Every test: unit, property, known-answer and end-to-end (real nats-server, RocksDB, OTLP).
test: build
	$(CARGO) test --release --workspace --no-fail-fast

## Each optimization on and off, side by side (figures for docs/PERFORMANCE.md), then the
## criterion micro-benchmarks.
bench: build
	$(BIN)/hsync bench all
	$(BIN)/hsync bench ablation --jobs 10000 --warmup 20000
	$(CARGO) bench --workspace

stop:
	$(BIN)/hsync down --dir $(STATE)

status:
	$(BIN)/hsync status

lint:
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-state: stop
	rm -rf $(STATE)
