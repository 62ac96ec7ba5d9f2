# The two commands of the README. Each installs what is missing (Debian packages, idempotent),
# builds, and runs. Everything else is a detail of these two.
BUILD   ?= build
JOBS    ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps build run test test-unit test-asan test-tsan test-fuzz test-integration bench clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake --preset release $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# The main job of this stage: a Linux guest boots on a VCP disk and writes and verifies a file system.
run: build
	@scripts/demo.sh

# The whole suite: unit tests (release, ASan+UBSan, TSan), fuzzers for a short time, and the
# integration tests against real peers.
test: build
	@scripts/test-all.sh

test-unit: build
	@ctest --test-dir $(BUILD) -L unit --output-on-failure -j $(JOBS)

test-integration: build
	@ctest --test-dir $(BUILD) -L integration --output-on-failure

bench: build
	@scripts/bench.sh

clean:
	rm -rf build build-asan build-tsan build-fuzz
