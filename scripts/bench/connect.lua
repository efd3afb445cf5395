-- bench/connect.lua MODE N HOPS...: connect + authenticate + `exec true`, N times, either one
-- after the other (MODE=seq) or all at once (MODE=par). HOPS are names in the lab description.
local sshchain = require "sshchain"
local lab = dofile((os.getenv("SSHCHAIN_LAB_DIR") or "/tmp/sshchain-lab") .. "/lab.lua")
local mode, n = arg[1], tonumber(arg[2])
local hops = {}
for i = 3, #arg do
  local name, key = arg[i]:match("^([^:]+)(:?k?e?y?)$")
  local h = {}
  for k, v in pairs(lab[name]) do h[k] = v end
  if key == ":key" then
    h.password, h.identity = nil, lab.keys[name:match("^%a+%d")]
  end
  h.known_hosts = lab.known_hosts
  h.timeout = 60
  hops[#hops + 1] = h
end
-- BENCH_CONTROL=1: the last jump host has control = true (through its mux when one answers)
if (os.getenv("BENCH_CONTROL") or "") ~= "" and #hops > 1 then hops[#hops - 1].control = true end
local function once()
  local s = assert(sshchain.connect(hops))
  assert(assert(s:exec("true")).ok)
  s:close()
end
if mode == "seq" then
  for _ = 1, n do once() end
else
  local items = {}
  for i = 1, n do items[i] = i end
  for _, r in ipairs(sshchain.parallel(items, once)) do assert(r.ok, r.err) end
end
