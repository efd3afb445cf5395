-- sftp_client.lua - drives the Lua SFTP client (lua/sshchain/sftp.lua) through every call it
-- has, on a channel whose bytes are given: the fuzz target fuzz_sftp_client.c hands it an input,
-- sftp_seeds.lua a server that answers (to make the corpus). The client must answer every call
-- with a result or nil, "CODE: message", CODE, err; a raise, a result of the wrong kind or a
-- failure without a code breaks the contract (this file raises, the target traps).
--
-- An input is the server's side of the conversation in chunks, each a big-endian 16-bit length
-- and its bytes: the channel hands one chunk each time the client looks for news, as a network
-- would, so that replies can come after their requests.
package.preload["sshchain.core"] = function() return { set_interrupted = function() end } end
-- the scheduler's wait, without a loop: the predicate is asked while the channel has news
package.preload["sshchain.sched"] = function()
  return {
    await_until = function(op, pred)
      for _ = 1, 1e6 do
        if pred() then return true end
        if op:done() then break end
      end
      return pred()
    end,
    -- one caller at a time here: a turn is always free
    semaphore = function() return { acquire = function() end, release = function() end } end,
  }
end
local sftp = require "sshchain.sftp"

local M = {}

--- The chunks of an input.
function M.chunks(input)
  local out, pos = {}, 1
  while pos <= #input do
    if pos + 1 > #input then
      out[#out + 1] = input:sub(pos)
      break
    end
    local n = string.unpack(">I2", input, pos)
    out[#out + 1] = input:sub(pos + 2, pos + 1 + n)
    pos = pos + 2 + n
  end
  return out
end

--- A channel op that hands chunks in turn; sent(bytes) sees what the client writes.
function M.channel(chunks, sent)
  local i = 0
  local op = {}
  function op.take()
    i = i + 1
    return chunks[i] or ""
  end
  function op.done() return i >= #chunks end
  function op.write(_, s)
    if sent then sent(s) end
    return true
  end
  function op.cancel() end
  function op.result() return nil, "the channel is closed" end
  return op
end

local function session(op)
  return {
    _take_slot = function() return { c = { exec_start = function() return op end } } end,
    _give_slot = function() end,
    label = function() return "fuzz" end,
    _c = { hop = function() return "fuzz" end },
  }
end

local failures = 0
--- A call's results: a result of type want (or true), or a failure that keeps the convention.
local function check(what, want, r, msg, code, err, ...)
  if r == nil and msg == nil and want == "optional" then return end
  if r ~= nil then
    if want ~= "any" and want ~= "optional" and type(r) ~= want then
      error(("%s gave a %s, not a %s"):format(what, type(r), want))
    end
    return r
  end
  if type(msg) ~= "string" or type(code) ~= "string" or not code:match("^E%u+$")
      or type(err) ~= "table" or err.code ~= code or select("#", ...) > 0 then
    error(("%s failed without the convention: %s, %s"):format(what, tostring(msg), tostring(code)))
  end
  if msg:sub(1, #code + 2) ~= code .. ": " then error(what .. ": the message does not start with its code: " .. msg) end
  failures = failures + 1
end

local function entries(what, list)
  if not list then return end
  for _, e in ipairs(list) do
    if type(e) == "table" then
      if type(e.name) ~= "string" then error(what .. ": an entry without a name") end
    elseif type(e) ~= "string" then
      error(what .. ": an entry of type " .. type(e))
    end
  end
end

--- Whether the server's bytes hold an end of file anywhere: a STATUS EOF or an empty DATA.
function M.has_end(bytes)
  local pos = 1
  while pos + 4 <= #bytes do
    local len = string.unpack(">I4", bytes, pos)
    if len < 1 or pos + 3 + len > #bytes then break end
    local t = bytes:byte(pos + 4)
    if t == 101 and len >= 9 and string.unpack(">I4", bytes, pos + 9) == 1 then return true end
    if t == 103 and len >= 9 and string.unpack(">I4", bytes, pos + 9) == 0 then return true end
    pos = pos + 4 + len
  end
  return false
end

--- Runs every call of the client over op; the number of calls that failed. ended: whether the
--- server ever said end of file (nil: it may have), so that a read cannot end without it.
function M.run(op, ended)
  failures = 0
  local function at_end(what)
    if ended == false then error(what .. " ended with no end of file from the server") end
  end
  local fs = check("open", "table", sftp.open(session(op)))
  if not fs then return failures end
  check("stat", "table", fs:stat("/a"))
  check("lstat", "table", fs:lstat("/a"))
  check("realpath", "string", fs:realpath("."))
  check("readlink", "string", fs:readlink("/l"))
  entries("list", check("list", "table", fs:list("/d")))
  entries("glob", check("glob", "table", fs:glob("/d/*")))
  check("statvfs", "table", fs:statvfs("/"))
  check("mkdir", "any", fs:mkdir("/m/n", { parents = true }))
  check("rename", "any", fs:rename("/a", "/b", { overwrite = true }))
  check("remove", "any", fs:remove("/a"))
  local f = check("open r", "table", fs:open("/f"))
  if f then
    for k = 1, 16 do -- small and large reads: a reply's tail is kept for the next read
      local n = k % 2 == 1 and 1000 or 40000
      local res = table.pack(f:read(n))
      local d = check("read", "optional", table.unpack(res, 1, res.n))
      if not d then
        if res[2] == nil then at_end("a read") end
        break
      end
      if type(d) ~= "string" or #d > n then error("read gave more than asked for") end
    end
    check("seek", "number", f:seek("end", 0))
    check("close r", "any", f:close())
  end
  local w = check("open w", "table", fs:open("/w", "a"))
  if w then
    check("write", "any", w:write(("x"):rep(70000)))
    check("close w", "any", w:close())
  end
  if check("read whole", "string", fs:read("/r")) then at_end("a whole-file read") end
  check("write whole", "any", fs:write("/s", "data"))
  fs:close()
  return failures
end

--- Runs the client over an input (the fuzz target's entry).
function M.fuzz(input)
  local chunks = M.chunks(input)
  return M.run(M.channel(chunks), M.has_end(table.concat(chunks)))
end

return M
