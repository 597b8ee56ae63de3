# rill: build, run and test. `make run` and `make test` are the two commands
# README.md promises; both install missing Debian packages first.

CC       ?= cc
BUILD    ?= build
PKGS      = luajit libuv libcurl openssl libpq sqlite3
OPT      ?= -O2 -g
SAN      ?=
CFLAGS    = $(OPT) $(SAN) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
            $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -Iruntime -I/usr/include/lua5.1
# cjson_buf.o defines the strbuf functions lua_cjson.o calls (strbuf.o, which exits when malloc fails, is
# not linked); --wrap=fpconv_strtod counts the numbers a decode reads as infinite
LDLIBS    = /usr/lib/x86_64-linux-gnu/liblua5.1-cjson.a -Wl,--wrap=fpconv_strtod -lhttp_parser \
            $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -lpthread -ldl
LDFLAGS   = -rdynamic $(SAN)

RUNTIME_SRC = $(filter-out runtime/main.c,$(wildcard runtime/*.c))
RUNTIME_OBJ = $(RUNTIME_SRC:runtime/%.c=$(BUILD)/obj/%.o)
STDLIB_LUA  = $(shell find stdlib -name '*.lua' | sort)
C_TESTS     = $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))

.PHONY: all run deps browser-deps directus-deps test test-c test-lua test-integration test-flows asan valgrind lint format bench clean \
        fuzz-build fuzz fuzz-smoke docs

all: $(BUILD)/rill

$(BUILD)/obj/%.o: runtime/%.c runtime/*.h | $(BUILD)/obj
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/librill.a: $(RUNTIME_OBJ)
	ar rcs $@ $^

$(BUILD)/embed: tools/embed.c | $(BUILD)
	$(CC) -O1 -Wall -Wextra -Werror -o $@ $<

# The stdlib ships inside the binary: one binary is all a deployment needs.
$(BUILD)/stdlib_embed.c: $(BUILD)/embed $(STDLIB_LUA)
	$(BUILD)/embed stdlib $(STDLIB_LUA) > $@

$(BUILD)/rill: runtime/main.c $(BUILD)/stdlib_embed.c $(BUILD)/librill.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ runtime/main.c $(BUILD)/stdlib_embed.c $(BUILD)/librill.a $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/t.h $(BUILD)/librill.a | $(BUILD)/tests
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/librill.a $(LDLIBS)

$(BUILD) $(BUILD)/obj $(BUILD)/tests:
	mkdir -p $@

deps:
	@tools/install-deps.sh debian-packages.txt

# playwright-core for the console test in a browser (Debian's chromium, from
# debian-packages.txt: no browser is downloaded), at the locked version.
BROWSER_DEPS = tests/browser/node_modules/.package-lock.json
$(BROWSER_DEPS): tests/browser/package.json tests/browser/package-lock.json
	@command -v npm >/dev/null || { echo "browser-deps: npm is missing (Debian: apt-get install npm)"; exit 1; }
	cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund

browser-deps: $(BROWSER_DEPS)

# Directus 11, the company's platform, for tests/test_directus.py (docs/directus.md), at the
# locked version (~510 MB, ~8 minutes the first time): installed again only when the lock changes.
# Without npm it says so (tests/test_directus.py skips only without node).
DIRECTUS_DEPS = directus/node_modules/.package-lock.json
$(DIRECTUS_DEPS): directus/package.json directus/package-lock.json
	@if command -v npm >/dev/null; then \
	    cd directus && npm ci --no-audit --no-fund --no-update-notifier; \
	else echo "directus-deps: npm is missing (Debian: apt-get install npm): Directus is not installed"; fi

directus-deps: $(DIRECTUS_DEPS)

# The company's schema and demo data on the embedded database first
# (loading them again changes nothing).
run: deps all
	$(BUILD)/rill db apply --config config/rill.lua db/schema.sqlite.sql db/demo.sql
	$(BUILD)/rill serve --config config/rill.lua

# Every test: style, C unit tests (plain, sanitized, under valgrind), the
# Lua unit tests and the end-to-end tests against a running rill.
test: deps
	@mkdir -p build && : > build/test-totals
	$(MAKE) lint
	$(MAKE) all
	$(BUILD)/rill lua tools/check-lua.lua $(STDLIB_LUA) $(wildcard flows/*.lua) $(wildcard fuzz/*.lua)
	$(MAKE) test-c RILL_TEST_TOTALS=$(CURDIR)/build/test-totals
	$(MAKE) asan RILL_TEST_TOTALS=$(CURDIR)/build/test-totals
	$(MAKE) valgrind RILL_TEST_TOTALS=$(CURDIR)/build/test-totals
	$(MAKE) test-lua RILL_TEST_TOTALS=$(CURDIR)/build/test-totals
	$(MAKE) test-integration RILL_TEST_TOTALS=$(CURDIR)/build/test-totals
	$(MAKE) test-flows RILL_TEST_TOTALS=$(CURDIR)/build/test-totals
	$(MAKE) fuzz-smoke RILL_TEST_TOTALS=$(CURDIR)/build/test-totals
	@awk '{ p += $$1; f += $$2 } END { printf "total: %d passed, %d failed\n", p, f }' build/test-totals

test-c: $(C_TESTS)
	@tools/run-tests.sh c $(C_TESTS)

test-lua: $(BUILD)/rill
	@tools/run-tests.sh lua $(BUILD)/rill $(wildcard tests/test_*.lua)

test-integration: $(BUILD)/rill $(BROWSER_DEPS) $(DIRECTUS_DEPS)
	@tools/run-tests.sh py $(wildcard tests/test_*.py)

# The flows' own tests (flows/*.test.lua), as an analyst runs them.
test-flows: $(BUILD)/rill
	@tools/run-tests.sh flows $(BUILD)/rill flows

# The C tests again, built with AddressSanitizer and UBSan.
asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	        SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" build-asan/rill test-c

# libFuzzer targets (fuzz/README.md), built with clang into build-fuzz/:
# fuzz/<name>.lua are Lua targets run by fuzz/lua_target.c, fuzz/fuzz_<name>.c
# are C targets. `make fuzz` runs each for FUZZ_SECONDS; `make test` runs a
# short smoke of each (seeds and saved crashes, then 20,000 inputs from a
# fixed seed or FUZZ_SMOKE_SECONDS, whichever comes first).
FUZZ_BUILD   = build-fuzz
FUZZ_SAN     = -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_LUA     = $(patsubst fuzz/%.lua,%,$(wildcard fuzz/*.lua))
FUZZ_C       = $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_TARGETS = $(FUZZ_LUA) $(FUZZ_C)
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 6

$(BUILD)/fuzz:
	mkdir -p $@

# Run in the sub-make below, with BUILD=build-fuzz and clang.
$(BUILD)/fuzz/%: fuzz/lua_target.c fuzz/lua_alloc.h fuzz/%.lua $(BUILD)/stdlib_embed.c $(BUILD)/librill.a | $(BUILD)/fuzz
	$(CC) $(CFLAGS) $(LDFLAGS) -fsanitize=fuzzer -DFUZZ_TARGET='"$*"' -DFUZZ_DIR='"$(CURDIR)/fuzz"' \
	    -o $@ fuzz/lua_target.c $(BUILD)/stdlib_embed.c $(BUILD)/librill.a $(LDLIBS)

$(BUILD)/fuzz/%: fuzz/fuzz_%.c fuzz/*.h $(BUILD)/stdlib_embed.c $(BUILD)/librill.a | $(BUILD)/fuzz
	$(CC) $(CFLAGS) $(LDFLAGS) -fsanitize=fuzzer -o $@ $< $(BUILD)/stdlib_embed.c $(BUILD)/librill.a $(LDLIBS)

fuzz-build:
	$(MAKE) BUILD=$(FUZZ_BUILD) CC=clang OPT="-O1 -g -fno-omit-frame-pointer -DRILL_HTTP_BIG_BUF=1024" \
	        SAN="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz/%)

fuzz: fuzz-build
	@tools/fuzz.sh run $(FUZZ_SECONDS) $(FUZZ_BUILD)/fuzz $(FUZZ_TARGETS)

fuzz-smoke: fuzz-build
	@tools/run-tests.sh fuzz $(FUZZ_SMOKE_SECONDS) $(FUZZ_BUILD)/fuzz $(FUZZ_TARGETS)

valgrind: $(C_TESTS)
	@tools/run-tests.sh valgrind $(C_TESTS)

# The generated section of docs/company-flows.md: each company flow's
# sequence diagram, from a real run of the flows' tests (tests/test_docs.py
# fails when the committed file is stale).
docs: $(BUILD)/rill
	tools/docs-diagrams.sh $(BUILD)/rill docs/company-flows.md docs/company-flows.md

lint:
	@tools/lint.sh

format:
	clang-format -i runtime/*.c runtime/*.h tests/*.c tests/*.h tools/*.c fuzz/*.c $(wildcard fuzz/*.h)

bench: all
	bench/run-all.sh

clean:
	rm -rf build build-asan build-fuzz
