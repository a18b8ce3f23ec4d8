# oxsdn: the two commands of the README's quick start, plus helpers.
#   make demo   installs what is missing, builds, runs the sandboxed single-node demo
#   make test   installs what is missing, builds, runs every test (root needed: the
#               tests create network namespaces, veths and eBPF programs)
SHELL := /bin/bash
CARGO ?= cargo
# Network tests are mostly waiting on the kernel; a few run at once.
TEST_THREADS ?= 4

.PHONY: setup build demo test bench clippy clean

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --workspace --locked

demo: build
	target/debug/oxsdn-demo

test: build
	$(CARGO) test --workspace --locked -- --test-threads=$(TEST_THREADS)

# Side-by-side throughput of oxsdn and the alternatives (not part of the tests).
bench: setup
	$(CARGO) build --release --workspace --locked
	target/release/oxsdn-bench

clippy: setup
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

clean:
	$(CARGO) clean
