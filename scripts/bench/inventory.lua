-- inventory.lua N DIR: load, select and build the chains of an N-host inventory (default 10000),
-- in both forms (Lua and ssh_config), each behind two jump hosts as the lab's. Prints one line per
-- form: "FORM seconds peak_MiB" (peak: the Lua heap at its highest, plus the process RSS growth).
local sshchain = require "sshchain"
local inventory = require "sshchain.inventory"
local n = tonumber(arg[1]) or 10000
local dir = arg[2] or os.tmpname():gsub("[^/]*$", "")
local rss_kib = dofile(arg[0]:gsub("[^/]*$", "") .. "common.lua").rss_kib

local lua_path, cfg_path = dir .. "/inv10k.lua", dir .. "/inv10k.config"
local f = assert(io.open(lua_path, "w"))
f:write("return { defaults = { user = 'ops', known_hosts = '/dev/null', host_key = 'off' },\n  hosts = {\n",
  "    gw = { host = '10.231.1.2' }, jump = { host = '10.231.2.2', via = 'gw' },\n")
for i = 1, n do f:write(("    ['node%05d'] = { host = '10.231.%d.%d', via = 'jump' },\n"):format(i, 10 + i // 250, i % 250 + 1)) end
f:write("  },\n  groups = { rack1 = { 'node0*' }, all = { 'node*' } },\n}\n")
f:close()
f = assert(io.open(cfg_path, "w"))
f:write("Host gw\n  HostName 10.231.1.2\n  User ops\nHost jump\n  HostName 10.231.2.2\n  ProxyJump gw\n")
for i = 1, n do
  f:write(("Host node%05d\n  HostName 10.231.%d.%d\n  ProxyJump jump\n"):format(i, 10 + i // 250, i % 250 + 1))
end
f:write("Host *\n  User ops\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n")
f:close()

local function measure(path)
  collectgarbage("collect")
  local r0, t0 = rss_kib(), sshchain.core.now()
  local inv = assert(inventory.load(path))
  local names = assert(inv:select { "node*" })
  assert(#names == n, "selected " .. #names)
  local hops = 0
  for _, name in ipairs(names) do
    local chain = assert(inv:chain(name))
    hops = hops + #chain
  end
  assert(hops == 3 * n, "hops " .. hops)
  local secs = sshchain.core.now() - t0
  local heap = collectgarbage("count") / 1024
  return secs, heap, (rss_kib() - r0) / 1024
end

for _, form in ipairs { { "lua", lua_path }, { "ssh_config", cfg_path } } do
  print(("%s %.3f %.1f %.1f"):format(form[1], measure(form[2])))
end
if not os.getenv("KEEP") then os.remove(lua_path)
os.remove(cfg_path) end
