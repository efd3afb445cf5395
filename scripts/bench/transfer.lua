-- bench/transfer.lua up|down PROTO LOCAL REMOTE: one transfer through j1 -> j2 -> t4 (key auth).
local sshchain = require "sshchain"
local lab = dofile((os.getenv("SSHCHAIN_LAB_DIR") or "/tmp/sshchain-lab") .. "/lab.lua")
local function spec(name)
  local s = { known_hosts = lab.known_hosts }
  for k, v in pairs(lab[name]) do s[k] = v end
  s.password, s.identity = nil, lab.keys[name]
  return s
end
local dir, proto, lpath, rpath = arg[1], arg[2], arg[3], arg[4]
local t = assert(sshchain.connect({ spec("j1"), spec("j2"), spec("t4") }))
if dir == "up" then
  assert(t:upload(lpath, rpath, { protocol = proto }))
else
  assert(t:download(rpath, lpath, { protocol = proto }))
end
t:close()
