-- bench/idle.lua N: opens N idle sessions to t4 through j1 -> j2 (one shared connection to each
-- jump host) and prints "N KB_BEFORE KB_AFTER": this process's RSS around opening them.
local sshchain = require "sshchain"
local common = dofile(arg[0]:gsub("[^/]*$", "") .. "common.lua")
local lab = common.lab
local function spec(name)
  local s = { known_hosts = lab.known_hosts, timeout = 120 }
  for k, v in pairs(lab[name]) do s[k] = v end
  s.password, s.identity = nil, lab.keys[name]
  return s
end
local rss = common.rss_kib
local n = tonumber(arg[1])
local j2 = assert(sshchain.connect { spec("j1"), spec("j2") })
local warm = assert(j2:connect(spec("t4"))) -- the first session's one-time allocations
assert(warm:exec("true"))
warm:close()
collectgarbage()
collectgarbage()
local before = rss()
local items, sessions = {}, {}
for i = 1, n do items[i] = i end
for _, r in ipairs(sshchain.parallel(items, function(i) sessions[i] = assert(j2:connect(spec("t4"))) end,
  { limit = 64 })) do
  assert(r.ok, r.err)
end
collectgarbage()
collectgarbage()
print(n, before, rss())
for _, s in ipairs(sessions) do s:close() end
j2:close()
