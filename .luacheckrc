-- luacheck settings for `make lint`: Lua 5.4; the specs run under busted.
std = "lua54"
max_line_length = 150
files["spec"] = { std = "+busted", max_line_length = 200 }
exclude_files = { "build", "build-asan", "build-fuzz" }
