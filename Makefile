# sshchain: build, test, demo, bench. `make test` and `make demo` install what they need first.
BUILD    ?= build
CC       ?= gcc
PKGS     := libssh lua5.4 libuv libcrypto
CFLAGS   ?= -O2 -g
WARN     := -Wall -Wextra -Wshadow -Wpointer-arith -Wformat=2 -Wno-format-nonliteral
SAN      ?=
# luarocks passes LUA_INCDIR and LUA_LIBDIR, and the external dependencies' *_INCDIR/*_LIBDIR;
# without them pkg-config finds everything
INCDIRS  := $(LUA_INCDIR) $(LIBSSH_INCDIR) $(LIBUV_INCDIR) $(OPENSSL_INCDIR)
LIBDIRS  := $(LIBSSH_LIBDIR) $(LIBUV_LIBDIR) $(OPENSSL_LIBDIR)
ALL_CFLAGS = -std=gnu11 $(CFLAGS) $(SAN) $(WARN) -fPIC -fvisibility=hidden \
             $(addprefix -I,$(INCDIRS)) $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LIBS     := $(addprefix -L,$(LIBDIRS)) $(shell pkg-config --libs libssh libuv libcrypto 2>/dev/null || echo -lssh -luv -lcrypto)
LUALIB   := $(if $(LUA_LIBDIR),-L$(LUA_LIBDIR)) $(shell pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4)

# Sources by glob: a new file is built (and a new Lua module embedded) without touching this list.
CORE_SRC := $(sort $(wildcard core/*.c))
BIND_SRC := $(sort $(wildcard lua/l_*.c))
LUA_MODS := sshchain.init=lua/sshchain.lua \
            $(foreach f,$(sort $(wildcard lua/sshchain/*.lua)),sshchain.$(basename $(notdir $(f)))=$(f)) \
            $(foreach f,$(sort $(wildcard scripts/recipes/*.lua)),sshchain.recipe.$(basename $(notdir $(f)))=$(f))
LUA_FILES := $(foreach m,$(LUA_MODS),$(word 2,$(subst =, ,$(m))))

CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/obj/%.o)
BIND_OBJ := $(BIND_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/embedded.o
HDRS     := $(wildcard core/*.h lua/*.h)

FUZZ_TARGETS := $(patsubst spec/fuzz/%.c,%,$(sort $(wildcard spec/fuzz/fuzz_*.c)))
FUZZ_SECONDS ?= 60
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
LUA_CFLAGS   := $(shell pkg-config --cflags lua5.4 2>/dev/null)

.PHONY: all lib install deps test test-asan test-faults test-unit fuzz fuzz-replay lint demo bench lab-up lab-down \
        clean check-exports
all: $(BUILD)/sshlua $(BUILD)/sshchain.so $(BUILD)/test_core

lib: $(BUILD)/sshlua $(BUILD)/sshchain.so

# luarocks (rockspec/) passes LIBDIR and BINDIR
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib/lua/5.4
BINDIR ?= $(PREFIX)/bin
install: lib
	install -D -m 755 $(BUILD)/sshchain.so $(DESTDIR)$(LIBDIR)/sshchain.so
	install -D -m 755 $(BUILD)/sshlua $(DESTDIR)$(BINDIR)/sshlua

deps:
	@scripts/deps.sh test

$(BUILD)/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/embedded.c: $(LUA_FILES) tools/embed.lua
	@mkdir -p $(BUILD)
	lua5.4 tools/embed.lua $@ $(LUA_MODS)

$(BUILD)/obj/embedded.o: $(BUILD)/embedded.c
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/libsshchain_core.a: $(CORE_OBJ)
	ar rcs $@ $^

$(BUILD)/sshchain.so: $(CORE_OBJ) $(BIND_OBJ)
	$(CC) $(SAN) -shared -o $@ $^ $(LIBS)

$(BUILD)/sshlua: $(BUILD)/obj/lua/sshlua.o $(CORE_OBJ) $(BIND_OBJ)
	$(CC) $(SAN) -o $@ $^ $(LIBS) $(LUALIB) -lm -ldl

$(BUILD)/test_core: spec/c/test_core.c $(BUILD)/libsshchain_core.a
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libsshchain_core.a $(LIBS) -lcrypto

# Fuzz targets: every parser of untrusted input, on a buffer alone (spec/fuzz/fuzz_*.c). The
# replay build (any compiler) runs them over their corpora in `make test`; `make fuzz` runs
# libFuzzer (clang) for FUZZ_SECONDS each, new inputs kept in build-fuzz/corpus/.
$(BUILD)/fuzz/%: spec/fuzz/%.c spec/fuzz/driver.c $(BUILD)/libsshchain_core.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LUA_CFLAGS) -DCONFIG_LUA='"lua/sshchain/config.lua"' -o $@ $< spec/fuzz/driver.c \
	  $(BUILD)/libsshchain_core.a $(LIBS) $(LUALIB) -lm

fuzz-replay: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%)
	@for t in $(FUZZ_TARGETS); do $(BUILD)/fuzz/$$t spec/fuzz/corpus/$$t || exit 1; done

build-fuzz/bin/%: spec/fuzz/%.c
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=clang CFLAGS="-O1 -g" \
	  SAN="-fsanitize=fuzzer-no-link $(FUZZ_SAN)" build-fuzz/libsshchain_core.a
	@mkdir -p $(dir $@)
	clang -O1 -g -fsanitize=fuzzer $(FUZZ_SAN) $(LUA_CFLAGS) -DSC_LIBFUZZER -DCONFIG_LUA='"lua/sshchain/config.lua"' \
	  -o $@ $< build-fuzz/libsshchain_core.a $(LIBS) $(LUALIB) -lm

fuzz:
	@scripts/deps.sh fuzz
	@for t in $(FUZZ_TARGETS); do $(MAKE) --no-print-directory build-fuzz/bin/$$t || exit 1; done
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p build-fuzz/corpus/$$t; \
	  echo "== $$t ($(FUZZ_SECONDS) s)"; \
	  build-fuzz/bin/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=5 -rss_limit_mb=2048 \
	    -max_len=65536 -print_final_stats=1 build-fuzz/corpus/$$t spec/fuzz/corpus/$$t \
	    > build-fuzz/$$t.log 2>&1 || { tail -40 build-fuzz/$$t.log; exit 1; }; \
	  grep -E "^stat::number_of_executed_units|^stat::peak_rss" build-fuzz/$$t.log | tr '\n' ' '; echo; \
	done

# The habits: C in .clang-format's style, cppcheck's warnings, luacheck (.luacheckrc) clean.
C_FILES := $(sort $(wildcard core/*.[ch] lua/*.[ch] spec/c/*.c spec/fuzz/*.c))
lint:
	@scripts/deps.sh lint
	@clang-format --dry-run --Werror $(C_FILES)
	@cppcheck --quiet --enable=warning,portability,performance --std=c11 --inline-suppr \
	  --suppress=toomanyconfigs --suppress=missingIncludeSystem --error-exitcode=1 core lua spec/c spec/fuzz
	@luacheck --quiet --no-color lua scripts spec tools
	@echo "lint: clean"

# Only luaopen_* may be exported by the module.
check-exports: $(BUILD)/sshchain.so
	@bad=$$(nm -D --defined-only $< | awk '$$2 ~ /[TD]/ {print $$3}' | grep -v '^luaopen_' || true); \
	 if [ -n "$$bad" ]; then echo "unexpected exports: $$bad"; exit 1; fi

test:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory lint all check-exports $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%)
	@scripts/run-tests.sh $(BUILD)

# The fault suite alone (it is part of `make test` too): faults on the lab's middle hop during
# each operation; its figures table goes to $(SSHCHAIN_FAULTS_OUT) (default /tmp/sshchain-faults.md).
test-faults:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory all
	@SPECS="spec/reconnect_spec.lua spec/faults_spec.lua" FUZZ_SECONDS=0 scripts/run-tests.sh $(BUILD)

# The fast tier: no root, no lab, seconds.
test-unit:
	@scripts/deps.sh unit
	@$(MAKE) --no-print-directory all $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%)
	@scripts/run-unit.sh $(BUILD)

# The suite under AddressSanitizer and UBSan (float-to-int casts included: GCC's `undefined`
# leaves them out), the fuzz corpora replayed under them too. A 32 MB quarantine (256 by default)
# keeps the specs' memory bounds meaningful there.
ASAN_SAN := -fsanitize=address,undefined,float-cast-overflow \
            -fno-sanitize-recover=undefined,float-cast-overflow
test-asan:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="-O1 -g -fno-omit-frame-pointer" \
	  SAN="$(ASAN_SAN)" all $(FUZZ_TARGETS:%=build-asan/fuzz/%)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:quarantine_size_mb=32 UBSAN_OPTIONS=print_stacktrace=1 \
	  SSHCHAIN_RUNNER=build-asan/sshlua FUZZ_SECONDS=0 \
	  scripts/run-tests.sh build-asan

demo:
	@scripts/deps.sh demo
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh $(BUILD)

bench:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory all
	@scripts/bench.sh $(BUILD)

lab-up:
	@scripts/deps.sh test
	@scripts/lab.sh up
lab-down:
	@scripts/lab.sh down

clean:
	rm -rf build build-asan build-fuzz
