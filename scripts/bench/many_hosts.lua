-- many_hosts.lua LAB_INVENTORY N OUT: writes OUT, a Lua inventory of N hosts h0001..hN spread over
-- the lab's 16 nodes (host i on node (i-1) mod 16 + 1), each behind the lab's two jump hosts, with
-- the lab's j1 and j2 lines as they are (their secrets from the environment).
local src, n, out = arg[1], tonumber(arg[2]), arg[3]
assert(src and n and out, "usage: many_hosts.lua LAB_INVENTORY N OUT")
local keep, nodes = {}, {}
for line in io.lines(src) do
  if line:match("^%s+j[12] = ") then keep[#keep + 1] = line end
  local node = line:match("^%s+n%d%d = (.*),%s*$")
  if node then nodes[#nodes + 1] = node end
end
assert(#keep == 2 and #nodes == 16, "not the lab's inventory: " .. src)
local f = assert(io.open(out, "w"))
f:write("-- ", n, " hosts over the lab's 16 nodes (scripts/bench/many_hosts.lua)\nreturn {\n")
for line in io.lines(src) do
  if line:match("^%s+defaults = ") then f:write(line, "\n") end
end
f:write("  hosts = {\n", table.concat(keep, "\n"), "\n")
for i = 1, n do f:write(("    h%04d = %s,\n"):format(i, nodes[(i - 1) % #nodes + 1])) end
f:write("  },\n}\n")
f:close()
