rockspec_format = "3.0"
package = "sshchain"
version = "0.1.0-1"
source = {
  url = "git+https://github.com/sshchain/sshchain.git",
  tag = "v0.1.0",
}
description = {
  summary = "SSH through chains and trees of jump hosts, from Lua (libssh, one event loop)",
  detailed = [[
    Run commands on many hosts, copy files and forward ports through any number of jump hosts,
    natively (no ssh binary), with coroutine concurrency; inside luv or cqueues applications too.
    Includes the sshlua interpreter and its recipes (exec, stress, copy, forward, tree).
  ]],
  homepage = "https://github.com/sshchain/sshchain",
  license = "MIT",
  labels = { "ssh", "libssh", "libuv", "jump-host" },
}
-- argparse and lua-cjson are what the recipes use (sshlua -r); the library itself needs neither
dependencies = { "lua >= 5.4, < 5.5", "argparse >= 0.7", "lua-cjson >= 2.1" }
external_dependencies = {
  LIBSSH = { header = "libssh/libssh.h", library = "ssh" },
  LIBUV = { header = "uv.h", library = "uv" },
  OPENSSL = { header = "openssl/evp.h", library = "crypto" },
}
build = {
  type = "make",
  build_target = "lib",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LIBSSH_INCDIR = "$(LIBSSH_INCDIR)", LIBSSH_LIBDIR = "$(LIBSSH_LIBDIR)",
    LIBUV_INCDIR = "$(LIBUV_INCDIR)", LIBUV_LIBDIR = "$(LIBUV_LIBDIR)",
    OPENSSL_INCDIR = "$(OPENSSL_INCDIR)", OPENSSL_LIBDIR = "$(OPENSSL_LIBDIR)",
  },
  install_target = "install",
  install_variables = { LIBDIR = "$(LIBDIR)", BINDIR = "$(BINDIR)" },
}
-- luarocks test: the fast tier (C unit tests, fuzz corpora, the specs that need no lab); make
-- test-unit installs busted with apt-get on Debian (scripts/deps.sh), as the rest of the suite does

test = { type = "command", command = "make test-unit" }
