-- bench/forward.lua PORTFILE TO_HOST TO_PORT: forwards a local port through j1 -> j2 to
-- TO_HOST:TO_PORT, writes the local port to PORTFILE, and serves until killed.
local sshchain = require "sshchain"
local lab = dofile((os.getenv("SSHCHAIN_LAB_DIR") or "/tmp/sshchain-lab") .. "/lab.lua")
local function spec(name)
  local s = { known_hosts = lab.known_hosts }
  for k, v in pairs(lab[name]) do s[k] = v end
  if name == "j1" then s.password, s.identity = nil, lab.keys.j1 end
  return s
end
local j2 = assert(sshchain.connect({ spec("j1"), spec("j2") }))
local f = assert(j2:forward { to_host = arg[2], to_port = tonumber(arg[3]) })
local out = assert(io.open(arg[1], "w"))
out:write(f.port, "\n")
out:close()
sshchain.run()
