-- bench/common.lua: what the bench scripts share (dofile'd beside them): the lab's description,
-- and this process's resident memory.
local M = setmetatable({}, { __index = function(t, k) -- the lab only when asked for (it must be up)
  if k ~= "lab" then return nil end
  t.lab = dofile((os.getenv("SSHCHAIN_LAB_DIR") or "/tmp/sshchain-lab") .. "/lab.lua")
  return t.lab
end })

--- This process's RSS in KiB.
function M.rss_kib()
  for line in io.lines("/proc/self/status") do
    local v = line:match("^VmRSS:%s*(%d+)")
    if v then return tonumber(v) end
  end
end

return M
