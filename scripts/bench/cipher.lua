-- bench/cipher.lua: prints the cipher negotiated with t4 through j1 -> j2 (the path's cipher).
local sshchain = require "sshchain"
local lab = dofile((os.getenv("SSHCHAIN_LAB_DIR") or "/tmp/sshchain-lab") .. "/lab.lua")
local function spec(name)
  local s = { known_hosts = lab.known_hosts }
  for k, v in pairs(lab[name]) do s[k] = v end
  s.password, s.identity = nil, lab.keys[name]
  return s
end
local t = assert(sshchain.connect({ spec("j1"), spec("j2"), spec("t4") }))
print(t:info().cipher)
t:close()
