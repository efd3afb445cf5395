-- latency.lua N: N chains j1 -> j2 -> t4 in sequence, each a fresh connection to every hop, then
-- `exec true`. Prints, as medians in ms: each hop's connect (TCP, or the hop channel's open),
-- key exchange and authentication, then the exec (call to result) and the whole (connect of j1
-- to the exec's result). A TCP stall (Nagle against a delayed ACK) shows as ~40 ms in one of them.
local sshchain = require "sshchain"
local lab = dofile((os.getenv("SSHCHAIN_LAB_DIR") or "/tmp/sshchain-lab") .. "/lab.lua")
local n = tonumber(arg[1]) or 20
local now = sshchain.core.now
local function spec(name)
  local s = {}
  for k, v in pairs(lab[name]) do s[k] = v end
  s.known_hosts = lab.known_hosts
  return s
end
local cols = { "j1 connect", "j1 kex", "j1 auth", "j2 connect", "j2 kex", "j2 auth", "t4 connect", "t4 kex",
  "t4 auth", "exec", "total" }
local v = {}
for i = 1, #cols do v[i] = {} end
for _ = 1, n do
  local t0 = now()
  local s = assert(sshchain.connect({ spec "j1", spec "j2", spec "t4" }, { share = false }))
  local hops = { s.parent.parent, s.parent, s }
  local x0 = now()
  assert(s:exec("true"))
  local x1 = now()
  for h, hs in ipairs(hops) do
    local info = hs:info()
    v[h * 3 - 2][#v[h * 3 - 2] + 1] = info.connect_ms
    v[h * 3 - 1][#v[h * 3 - 1] + 1] = info.handshake_ms
    v[h * 3][#v[h * 3] + 1] = info.auth_ms
  end
  v[10][#v[10] + 1] = (x1 - x0) * 1000
  v[11][#v[11] + 1] = (x1 - t0) * 1000
  s:close()
end
local out = {}
for i, name in ipairs(cols) do
  table.sort(v[i])
  out[#out + 1] = ("%s %.1f"):format(name:gsub(" ", "_"), v[i][#v[i] // 2 + 1])
end
print(table.concat(out, " "))
