# sshchain: build, test, demo, bench. `make test` and `make demo` install what they need first.
BUILD    ?= build
CC       ?= gcc
PKGS     := libssh lua5.4 libuv libcrypto
CFLAGS   ?= -O2 -g
WARN     := -Wall -Wextra -Wshadow -Wpointer-arith -Wformat=2 -Wno-format-nonliteral
SAN      ?=
ALL_CFLAGS = -std=gnu11 $(CFLAGS) $(SAN) $(WARN) -fPIC -fvisibility=hidden \
             $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LIBS     := $(shell pkg-config --libs libssh libuv libcrypto 2>/dev/null)
LUALIB   := $(shell pkg-config --libs lua5.4 2>/dev/null)

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

.PHONY: all lib install deps test test-asan demo bench lab-up lab-down clean check-exports
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
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libsshchain_core.a $(LIBS)

# Only luaopen_* may be exported by the module.
check-exports: $(BUILD)/sshchain.so
	@bad=$$(nm -D --defined-only $< | awk '$$2 ~ /[TD]/ {print $$3}' | grep -v '^luaopen_' || true); \
	 if [ -n "$$bad" ]; then echo "unexpected exports: $$bad"; exit 1; fi

test:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory all check-exports
	@scripts/run-tests.sh $(BUILD)

test-asan:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" all
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  SSHCHAIN_RUNNER=build-asan/sshlua \
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
	rm -rf build build-asan
