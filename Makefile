# SPDX-License-Identifier: BSD-2-Clause

SHELL := /bin/bash
# lua-resty-nonblocking-ffi
#
#   make                build the module and the C runtimes into build/
#                       (a C compiler and the nginx build tree, nothing else)
#   make go             the Go library (make python, make java: the loaders);
#                       each skipped with one line when its toolchain is
#                       missing (NFFI_REQUIRE_ALL=1 fails instead: CI)
#   make run            set up, then serve the demo on 127.0.0.1:$(PORT)
#   make test           set up, then run the tests of every part built
#   make install        install into $(DESTDIR)$(PREFIX) (scripts/install.mk;
#                       make uninstall); make deb: the Debian packages
#   make test-memcheck  the integration tests with the worker under valgrind
#   make rust           the Rust SDK's examples (part of make; skipped
#                       without cargo); make rust-check: fmt, clippy, tests
#   make bench          the benchmark (bench/results/latest.*)
#   make bench-smoke    the benchmark with tiny counts (part of make test)
#   make soak           a mixed load for SOAK_SECONDS (600): nothing lost,
#                       memory flat (a 30 s run is part of make test)
#   make fuzz           each fuzz target for FUZZ_SECONDS (60; 10 s runs
#                       are part of make test)

NGINX_SRC  ?= /usr/share/nginx/src
BUILD      := $(CURDIR)/build
PORT       ?= 8080
CFLAGS_MOD := -g -O2 -fPIC -Wall -Wextra -Werror
LDFLAGS_MOD ?=
MODULE     := $(BUILD)/ngx_http_lua_nonblocking_ffi_module.so
EXAMPLE    := $(BUILD)/libnffi_example.so
# the runtimes of the tests (tests/runtimes/NAME.c -> libnffi_NAME.so)
FIXTURES   := $(BUILD)/libnffi_test_runtime.so \
              $(BUILD)/libnffi_legacy_echo.so $(BUILD)/libnffi_no_init.so \
              $(BUILD)/libnffi_abi_future.so
LIB_CFLAGS := -g -O2 -fPIC -shared -Wall -Wextra -Werror \
              -Wno-unused-parameter -Iinclude -pthread
SRCS       := config $(wildcard src/*.c src/*.h include/*.h)
# Debian's interpreter and its python3-pytest, also with pyenv on PATH
PYTEST     ?= /usr/bin/python3 -m pytest
SOAK_SECONDS ?= 600
FUZZ_SECONDS ?= 60

.PHONY: all parts deps go python java rust rust-check run test test-unit \
        test-integration test-memcheck bench soak fuzz deb \
        bench-smoke clean

all: $(MODULE) $(EXAMPLE) $(FIXTURES)

# the language parts: each builds when its toolchain is there
parts: go python java rust

# $(call SKIP,part,why): one line, and a failure when NFFI_REQUIRE_ALL=1
SKIP = echo "$(1): skipped: $(2)"; \
       if [ "$$NFFI_REQUIRE_ALL" = 1 ]; then \
           echo "$(1): NFFI_REQUIRE_ALL=1: every part must build"; exit 1; \
       fi

# the Go toolchain of this kind of machine lives in /usr/local/go, which a
# login shell may not have on PATH (gofmt, the fuzz tests need it there)
export PATH := $(PATH):/usr/local/go/bin
HAVE_GO = command -v go >/dev/null

# built beside the target, then renamed over it: a running nginx that has
# the old library mapped keeps it intact
INSTALL_SO = cp $(1) $@.tmp && mv -f $@.tmp $@
INSTALL_SO_FROM = { cp $(1) $(2).tmp$$$$ && mv -f $(2).tmp$$$$ $(2); }

# configure once per build tree; rebuilding the module takes a second
$(BUILD)/nginx/objs/Makefile: config
	rm -rf $(BUILD)/nginx
	mkdir -p $(BUILD)
	cp -r $(NGINX_SRC) $(BUILD)/nginx
	cd $(BUILD)/nginx && . ./conf_flags && \
	    ./configure "$${NGX_CONF_FLAGS[@]}" \
	        --with-cc-opt='$(CFLAGS_MOD)' --with-ld-opt='$(LDFLAGS_MOD)' \
	        --add-dynamic-module=$(CURDIR) >$(BUILD)/configure.log 2>&1 \
	    || { tail -20 $(BUILD)/configure.log; exit 1; }

$(MODULE): $(BUILD)/nginx/objs/Makefile $(SRCS)
	$(MAKE) -s -C $(BUILD)/nginx -f objs/Makefile modules
	$(call INSTALL_SO,$(BUILD)/nginx/objs/ngx_http_lua_nonblocking_ffi_module.so)

$(EXAMPLE): examples/c/example.c include/nonblocking_ffi.h
	mkdir -p $(BUILD)
	$(CC) $(LIB_CFLAGS) -o $@.tmp $< && mv -f $@.tmp $@

$(BUILD)/libnffi_%.so: tests/runtimes/%.c include/nonblocking_ffi.h
	mkdir -p $(BUILD)
	$(CC) $(LIB_CFLAGS) -o $@.tmp $< && mv -f $@.tmp $@

# the Go SDK's examples: one library hosting every Go handler (docs/go.md)
go:
	@if $(HAVE_GO); then \
	    $(MAKE) -s -C examples/go all; \
	else \
	    $(call SKIP,go,no Go toolchain (go 1.26 or newer) on PATH); \
	fi

# the Python loader and its package (docs/python.md): Debian's CPython
# (python3-dev) or PYTHON_CONFIG=... of another with a shared libpython
python:
	@if [ -x "$(or $(PYTHON_CONFIG),/usr/bin/python3-config)" ]; then \
	    $(MAKE) -s -C shims/python all; \
	else \
	    $(call SKIP,python,no $(or $(PYTHON_CONFIG),/usr/bin/python3-config) \
	        (python3-dev 3.9 or newer)); \
	fi

# the Java loader, its API jar and examples (docs/java.md)
java:
	@if command -v javac >/dev/null && command -v mvn >/dev/null; then \
	    $(MAKE) -s -C shims/java all; \
	else \
	    $(call SKIP,java,javac (JDK 17 or newer) or mvn missing); \
	fi

# the Rust SDK's examples (docs/rust.md): one cargo workspace (Cargo.toml,
# target folder build/cargo), the library and the gRPC server copied out
RUST_LIB    := $(BUILD)/lib_nonblocking_ffi_rust.so
RUST_SERVER := $(BUILD)/nffi-grpc-server
CARGO       ?= cargo
CARGO_FLAGS := --locked -j 2

rust:
	@if command -v $(CARGO) >/dev/null; then \
	    $(MAKE) -s rust-build; \
	else \
	    $(call SKIP,rust,cargo missing (Rust 1.80 or newer: https://rustup.rs)); \
	fi

.PHONY: rust-build
rust-build:
	$(CARGO) build -q $(CARGO_FLAGS) --release
	@mkdir -p $(BUILD)
	@cmp -s $(BUILD)/cargo/release/libnffi_rust_examples.so $(RUST_LIB) || \
	    $(call INSTALL_SO_FROM,$(BUILD)/cargo/release/libnffi_rust_examples.so,$(RUST_LIB))
	@cmp -s $(BUILD)/cargo/release/nffi-grpc-server $(RUST_SERVER) || \
	    $(call INSTALL_SO_FROM,$(BUILD)/cargo/release/nffi-grpc-server,$(RUST_SERVER))

# unit tests of the SDK (with a fake module), clippy and rustfmt
rust-check:
	@if command -v $(CARGO) >/dev/null; then \
	    $(CARGO) fmt --all --check && \
	    $(CARGO) clippy -q $(CARGO_FLAGS) --workspace --all-targets \
	        --all-features -- -D warnings && \
	    $(CARGO) test -q $(CARGO_FLAGS) -p nonblocking-ffi --all-features; \
	else \
	    $(call SKIP,rust-check,cargo missing); \
	fi

$(BUILD)/echo_server: bench/echo_server.c
	mkdir -p $(BUILD)
	$(CC) -O2 -Wall -Wextra -Werror -pthread -o $@ $<

deps:
	@scripts/deps.sh
	@if $(HAVE_GO); then \
	    $(MAKE) -s -C examples/go deps; \
	else \
	    $(call SKIP,go,no Go toolchain (go 1.26 or newer) on PATH); \
	fi
	@$(MAKE) -s -C shims/python deps
	@$(MAKE) -s -C shims/java deps
	@if command -v $(CARGO) >/dev/null; then $(CARGO) fetch -q --locked; \
	else $(call SKIP,rust,cargo missing); fi

run: deps all parts
	PORT=$(PORT) scripts/run-demo.sh

test: deps all parts test-unit test-integration bench-smoke

test-unit:
	$(MAKE) -s -C tests/unit test
	@if $(HAVE_GO); then \
	    $(MAKE) -s -C examples/go check test; \
	else \
	    $(call SKIP,go unit tests,no Go toolchain); \
	fi
	$(MAKE) -s rust-check

# -rs: the reason of every skipped test (a part not built, memcheck)
test-integration: all
	$(PYTEST) -q -rs tests

# valgrind runs one thread at a time: a test per core (pytest-xdist,
# Debian's python3-pytest-xdist; sequential without it)
MEMCHECK_JOBS = $(shell /usr/bin/python3 -c 'import xdist' 2>/dev/null \
                  && printf '%s' '-n 2')

test-memcheck: deps all parts
	NFFI_MEMCHECK=1 $(PYTEST) -q -rs $(MEMCHECK_JOBS) tests

bench: deps all parts $(BUILD)/echo_server
	python3 bench/run.py

soak: deps all parts
	python3 tests/soak.py --seconds $(SOAK_SECONDS)

# libFuzzer targets (clang); their corpora are in tests/fuzz/corpus, where
# make fuzz writes what it finds; Go's is sdk/go/nffi/testdata/fuzz
FUZZ_CFLAGS := -g -O1 -fsanitize=fuzzer,address,undefined \
               -fno-sanitize-recover=all -Ishims/common

$(BUILD)/fuzz/shim_cfg_fuzz: tests/fuzz/shim_cfg_fuzz.c \
                             shims/common/nffi_shim_cfg.c \
                             shims/common/nffi_shim_cfg.h
	mkdir -p $(BUILD)/fuzz
	clang $(FUZZ_CFLAGS) -o $@ tests/fuzz/shim_cfg_fuzz.c \
	    shims/common/nffi_shim_cfg.c

fuzz: deps all parts $(BUILD)/fuzz/shim_cfg_fuzz
	$(BUILD)/fuzz/shim_cfg_fuzz -max_total_time=$(FUZZ_SECONDS) \
	    tests/fuzz/corpus/shim_cfg
	# a count (about 40 000 a second here), not a time: golang/go#75804
	cd sdk/go && go test -run '^$$' -fuzz FuzzSplitCfg \
	    -fuzztime $$(( $(FUZZ_SECONDS) * 40000 ))x ./nffi
	python3 tests/fuzz_nginx.py --seconds $(FUZZ_SECONDS)

bench-smoke: all $(BUILD)/echo_server
	python3 bench/run.py --smoke >/dev/null
	@echo "bench-smoke: ok (bench/results/smoke.md)"

include scripts/install.mk

# the Debian packages (debian/), built in build/deb (scripts/build-deb.sh)
deb:
	scripts/build-deb.sh

clean:
	$(MAKE) -C examples/go clean
	rm -rf $(BUILD) shims/java/target
