# oxsdn: the two commands of the README's quick start, plus helpers.
#   make demo   installs what is missing, builds, runs the sandboxed single-node demo
#   make test   installs what is missing, builds, runs every test (root needed: the
#               tests create network namespaces, veths and eBPF programs)
#   make differential   the eBPF programs against the reference model, long run
SHELL := /bin/bash
CARGO ?= cargo
# Network tests are mostly waiting on the kernel; a few run at once.
TEST_THREADS ?= 4

.PHONY: setup build demo test lint differential soak bench fuzz image clean

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --workspace --locked

demo: build
	target/debug/oxsdn-demo

# The differential test runs on its own, with its output shown: it says how many cases
# it ran and from which seed.
test: build lint
	$(CARGO) test --workspace --locked -- --test-threads=$(TEST_THREADS) --skip ebpf_programs_agree_with_the_model
	$(CARGO) test -p oxsdn-tests --locked --test differential ebpf_programs_agree_with_the_model -- --nocapture

# The eBPF programs against the reference model on many random states and frames
# (docs/model.md); `make test` runs a short version.
OXSDN_DIFF_CASES ?= 1000000
differential: build
	OXSDN_DIFF_CASES=$(OXSDN_DIFF_CASES) $(CARGO) test -p oxsdn-tests --locked --test differential -- --nocapture

# The long variants of the reliability tests: 10 minutes of pod and CLI churn under
# traffic, 5 minutes of VNID changes under probes (make test runs 60 s and 30 s).
soak: build
	OXSDN_SOAK_SECS=600 OXSDN_HAMMER_SECS=300 $(CARGO) test --locked -p oxsdn-tests --test reliability -- --nocapture --test-threads=1 churn vnid

# Side-by-side throughput of oxsdn and the alternatives (not part of the tests).
bench: setup
	$(CARGO) build --release --workspace --locked
	target/release/oxsdn-bench

# The container image deploy/ runs (oxsdn:<version>, IMAGE=... to name it otherwise),
# with podman, from the release binaries; nothing is downloaded (scripts/image.sh).
image: setup
	$(CARGO) build --release --locked -p oxsdn-dataplane -p oxsdn-cni -p oxsdn-cli -p oxsdn-kube
	bash scripts/image.sh

# Fuzzes each parser for FUZZ_SECONDS (cargo-fuzz, nightly; installed if missing),
# starting from the seeds in fuzz/corpus/<target>/ (which `make test` replays). New inputs
# land in fuzz/work/<target>/ and crashes in fuzz/artifacts/<target>/ (both untracked):
# a crash, once fixed, goes into fuzz/corpus/<target>/ as a regression input.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= netconf cni_env agent_protocol prev_result store_file store_record manifest
fuzz: setup
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p work/$$t && \
	  $(CARGO) +nightly fuzz run $$t work/$$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

# rustfmt and clippy, warnings as errors, for the workspace and the eBPF crate (its own
# workspace, nightly, BPF target). `make test` runs it first.
lint: setup
	$(CARGO) fmt --all --check
	cd ebpf && $(CARGO) +nightly fmt --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	cd ebpf && $(CARGO) +nightly clippy --release --locked -- -D warnings

clean:
	$(CARGO) clean
