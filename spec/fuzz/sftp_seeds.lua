-- sftp_seeds.lua DIR: writes the seed corpus of fuzz_sftp_client into DIR. Each seed is what a
-- server that answers every request sends while sftp_client.lua runs through its calls,
-- recorded chunk by chunk as the client took it: one as OpenSSH's sftp-server would answer, and
-- variants (every call refused, OK past a file's end, silence after a few replies). This is a
-- corpus maker, not a test: the specs speak to real servers.
--   lua5.4 spec/fuzz/sftp_seeds.lua spec/fuzz/corpus/fuzz_sftp_client   (from the repository)
package.path = "lua/?.lua;spec/fuzz/?.lua;" .. package.path
local client = require "sftp_client"

local function pkt(t, body) return string.pack(">s4", string.char(t) .. body) end
local function status(id, code, msg) return pkt(101, string.pack(">I4I4s4s4", id, code, msg or "", "")) end
local function attrs(perm, size)
  return string.pack(">I4I8I4I4I4I4I4", 1 | 2 | 4 | 8, size or 10, 1000, 1000, perm, 1700000000, 1700000000)
end
local function names(id, list)
  local parts = { string.pack(">I4I4", id, #list) }
  for _, e in ipairs(list) do parts[#parts + 1] = string.pack(">s4s4", e[1], e[1]) .. attrs(e[2]) end
  return pkt(104, table.concat(parts))
end

--- A server: answer(type, id, body) -> the reply (or "" for none). mode picks the variant.
local function server(mode, file_size)
  local listed, data_left = {}, {}
  return function(t, id, body)
    if t == 1 then
      return pkt(2, string.pack(">I4s4s4s4s4", 3, "posix-rename@openssh.com", "1", "statvfs@openssh.com", "2"))
    end
    if mode ~= "ok" and mode ~= "read_ok" then return status(id, mode == "noent" and 2 or 4, "refused") end
    -- read_ok: a broken server that says OK past a file's end and cannot list
    if mode == "read_ok" and t == 11 then return status(id, 4, "refused") end
    if t == 7 or t == 8 or t == 17 then return pkt(105, string.pack(">I4", id) .. attrs(t == 8 and 0x81a4 or 0x41ed, file_size)) end
    if t == 16 or t == 19 then return names(id, { { "/x", 0x81a4 } }) end
    if t == 11 then return pkt(102, string.pack(">I4s4", id, "dir1")) end
    if t == 12 then
      local h = string.unpack(">s4", body)
      if listed[h] then return status(id, 1, "end of file") end
      listed[h] = true
      return names(id, { { ".", 0x41ed }, { "a", 0x81a4 }, { "l", 0xa1ff }, { "sub", 0x41ed } })
    end
    if t == 3 then
      local path = string.unpack(">s4", body)
      local h = "file:" .. path
      data_left[h] = file_size
      return pkt(102, string.pack(">I4s4", id, h))
    end
    if t == 5 then
      local h, off, want = string.unpack(">s4I8I4", body)
      local size = data_left[h] or 0
      if off >= size then return status(id, mode == "read_ok" and 0 or 1, "end of file") end
      local n = math.min(want, size - off)
      return pkt(103, string.pack(">I4s4", id, ("y"):rep(n)))
    end
    if t == 200 then
      local name = string.unpack(">s4", body)
      if name == "statvfs@openssh.com" then
        return pkt(201, string.pack(">I4", id) .. string.pack(">I8I8I8I8I8I8I8I8I8I8I8", 4096, 4096, 1e6, 5e5, 5e5, 1e5, 5e4, 5e4, 7, 0, 255))
      end
      return status(id, 0, "")
    end
    return status(id, 0, "") -- CLOSE, WRITE, MKDIR, REMOVE, RENAME, SETSTAT...
  end
end

--- Runs the client against a server; the recorded input. stop_after: replies before silence.
local function record(mode, file_size, stop_after)
  local answer, queued, replies = server(mode, file_size), {}, 0
  local log = {}
  local op = client.channel({}, function(s)
    local pos = 1
    while pos <= #s do
      local len = string.unpack(">I4", s, pos)
      local t = s:byte(pos + 4)
      local id, body = 0, s:sub(pos + 5, pos + 3 + len)
      if t ~= 1 then id, body = string.unpack(">I4", s, pos + 5), s:sub(pos + 9, pos + 3 + len) end
      if not stop_after or replies < stop_after then
        queued[#queued + 1] = answer(t, id, body)
        replies = replies + 1
      end
      pos = pos + 4 + len
    end
  end)
  local taken = 0
  op.take = function()
    taken = taken + 1
    local chunk = table.concat(queued)
    queued = {}
    -- a chunk over 64 KiB is handed in parts: its replies come a little later, never earlier
    local pos = 1
    repeat
      log[#log + 1] = string.pack(">s2", chunk:sub(pos, pos + 65534))
      pos = pos + 65535
    until pos > #chunk
    return chunk
  end
  op.done = function() return #queued == 0 and taken > 0 and (stop_after and replies >= stop_after) end
  client.run(op)
  return table.concat(log)
end

local dir = assert(arg[1], "usage: sftp_seeds.lua DIR")
local seeds = {
  ok = record("ok", 25000),
  small = record("ok", 10),
  read_ok = record("read_ok", 10),
  refused = record("fail", 10),
  noent = record("noent", 10),
  silent_after_3 = record("ok", 25000, 3),
  silent_after_12 = record("ok", 25000, 12),
}
for name, bytes in pairs(seeds) do
  if #bytes > 65536 then error(name .. ": a seed over libFuzzer's -max_len of make fuzz") end
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(bytes)
  f:close()
  io.write(("%s: %d bytes\n"):format(name, #bytes))
end
