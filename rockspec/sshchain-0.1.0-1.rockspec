rockspec_format = "3.0"
package = "sshchain"
version = "0.1.0-1"
source = { url = "git+file:///sshchain" }
description = {
  summary = "SSH through chains and trees of jump hosts, from Lua (libssh, one event loop)",
  detailed = [[
    Run commands on many hosts, copy files and forward ports through any number of jump hosts,
    natively (no ssh binary), with coroutine concurrency. Includes the sshlua interpreter.
  ]],
  license = "MIT",
}
dependencies = { "lua >= 5.4, < 5.5" }
build = {
  type = "make",
  build_target = "lib",
  build_variables = { CFLAGS = "$(CFLAGS)" },
  install_target = "install",
  install_variables = { LIBDIR = "$(LIBDIR)", BINDIR = "$(BINDIR)" },
}
