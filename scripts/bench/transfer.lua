-- bench/transfer.lua up|down PROTO LOCAL REMOTE: one transfer through j1 -> j2 -> t4 (key auth).
-- bench/transfer.lua cipher: prints the cipher negotiated on that path.
local sshchain = require "sshchain"
local lab = dofile(arg[0]:gsub("[^/]*$", "") .. "common.lua").lab
local function spec(name)
  local s = { known_hosts = lab.known_hosts }
  for k, v in pairs(lab[name]) do s[k] = v end
  s.password, s.identity = nil, lab.keys[name]
  return s
end
local dir, proto, lpath, rpath = arg[1], arg[2], arg[3], arg[4]
local t = assert(sshchain.connect({ spec("j1"), spec("j2"), spec("t4") }))
if dir == "cipher" then
  print(t:info().cipher)
elseif dir == "up" then
  assert(t:upload(lpath, rpath, { protocol = proto }))
else
  assert(t:download(rpath, lpath, { protocol = proto }))
end
t:close()
