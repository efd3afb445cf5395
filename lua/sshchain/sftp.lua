-- sshchain.sftp: an SFTP v3 client (Session:sftp) on a subsystem channel of its own. The C side
-- carries the bytes (an exec op asked for the "sftp" subsystem, with its window and
-- back-pressure); the packets are built and parsed here. Requests are pipelined: every call
-- sends and then waits for its own reply by id, so calls in several tasks, and a file's
-- read-ahead, are in flight together. Every wait yields like the rest of sshchain.
--
-- Replies come from the server, so every parse is checked: a packet that is short, too long or
-- malformed ends the client with EPROTO.
local sched = require "sshchain.sched"
local errors = require "sshchain.errors"

local M = {}

-- packet types (draft-ietf-secsh-filexfer-02, the version OpenSSH speaks)
local INIT, OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT = 1, 3, 4, 5, 6, 7, 8, 9
local OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME, READLINK, SYMLINK =
  11, 12, 13, 14, 15, 16, 17, 18, 19, 20
local VERSION, STATUS, HANDLE, DATA, NAME, ATTRS, EXTENDED, EXTENDED_REPLY =
  2, 101, 102, 103, 104, 105, 200, 201
local A_SIZE, A_UIDGID, A_PERM, A_TIME, A_EXT = 1, 2, 4, 8, 0x80000000
local O_READ, O_WRITE, O_APPEND, O_CREAT, O_TRUNC = 1, 2, 4, 8, 0x10

local MAX_PACKET = 256 * 1024 + 1024 -- what OpenSSH's server sends at most, and some room
local CHUNK = 32768                  -- bytes a READ or WRITE asks for
local AHEAD = 16                     -- requests of a file in flight
local TIMEOUT = 60                   -- seconds a reply may take

local STATUS_CODE = { [2] = "ENOENT", [3] = "EACCES", [5] = "EPROTO" }
local STATUS_TEXT = { [1] = "end of file", [2] = "no such file", [3] = "permission denied", [4] = "failure",
  [5] = "bad message", [6] = "no connection", [7] = "connection lost", [8] = "operation unsupported" }

local SFTP = {}
SFTP.__index = SFTP
M.SFTP = SFTP
local File = {}
File.__index = File
M.File = File

-- ---- the wire ----

local function bad_path(p, n, method)
  if type(p) ~= "string" or p == "" or p:find("\0", 1, true) then
    error(("bad argument #%d to '%s' (non-empty path expected)"):format(n, method), 3)
  end
end

local function attrs_bytes(a)
  local flags, parts = 0, {}
  if a.size then flags = flags | A_SIZE; parts[#parts + 1] = string.pack(">I8", a.size) end
  if a.uid then flags = flags | A_UIDGID; parts[#parts + 1] = string.pack(">I4I4", a.uid, a.gid) end
  if a.mode then flags = flags | A_PERM; parts[#parts + 1] = string.pack(">I4", a.mode) end
  if a.atime then flags = flags | A_TIME; parts[#parts + 1] = string.pack(">I4I4", a.atime, a.mtime) end
  return string.pack(">I4", flags) .. table.concat(parts)
end

local TYPES = { [0x8000] = "file", [0x4000] = "dir", [0xA000] = "link", [0x2000] = "char",
  [0x6000] = "block", [0x1000] = "fifo", [0xC000] = "socket" }

--- Attributes at pos of data: a table and the position after them (string.unpack raises on a
--- short packet: the caller turns that into EPROTO).
local function parse_attrs(data, pos)
  local a = {}
  local flags
  flags, pos = string.unpack(">I4", data, pos)
  if flags & A_SIZE ~= 0 then a.size, pos = string.unpack(">I8", data, pos) end
  if flags & A_UIDGID ~= 0 then a.uid, a.gid, pos = string.unpack(">I4I4", data, pos) end
  if flags & A_PERM ~= 0 then
    local perm
    perm, pos = string.unpack(">I4", data, pos)
    a.mode = perm & 0xFFF
    a.type = TYPES[perm & 0xF000] or "other"
  end
  if flags & A_TIME ~= 0 then a.atime, a.mtime, pos = string.unpack(">I4I4", data, pos) end
  if flags & A_EXT ~= 0 then
    local n
    n, pos = string.unpack(">I4", data, pos)
    if n > 1000 then error("too many extended attributes") end
    for _ = 1, n do _, _, pos = string.unpack(">s4s4", data, pos) end
  end
  return a, pos
end
M.parse_attrs = parse_attrs

-- ---- the client ----

--- Opens an SFTP client on session s: an SFTP object, or nil, msg, CODE, err.
function M.open(s)
  local conn, msg, code, info = s:_take_slot(nil, "sftp")
  if not conn then return nil, msg, code, info end
  local ok, op = pcall(conn.c.exec_start, conn.c, nil,
    { subsystem = "sftp", stdin_open = true, stream = true, max_output = 0 })
  if not ok then
    s:_give_slot(conn)
    error(op, 2)
  end
  local fs = setmetatable({ _s = s, _conn = conn, _op = op, _in = "", _replies = {}, _pending = {}, _discard = {}, _next = 1,
    label = s:label(), hop = s._c:hop(), extensions = {} }, SFTP)
  op:write(string.pack(">s4", string.pack(">BI4", INIT, 3)))
  local r, m, c, e = fs:_wait(0, "init", "")
  if not r then
    fs:close()
    return nil, m, c, e
  end
  return fs
end

function SFTP:_fail(code, what, path, fmt, ...)
  local detail = select("#", ...) > 0 and fmt:format(...) or fmt
  return errors.fail(code, { label = self.label, hop = self.hop, stage = "sftp",
    reason = code == "ETIMEDOUT" and "timeout" or nil },
    "%s%s: %s", what, path ~= "" and (" " .. ("%q"):format(path):sub(2, -2)) or "", detail)
end

--- Moves the channel's output into the reply table; false when the server broke the protocol
--- (a reply for no request in flight among others: a server cannot make us keep what we did not
--- ask for).
function SFTP:_pump()
  local o = self._op:take() -- stderr too: left in C it would hold the channel up
  if #o > 0 then self._in = self._in .. o end
  local buf, pos = self._in, 1
  while #buf - pos + 1 >= 4 do
    local len = string.unpack(">I4", buf, pos)
    if len < 1 or len > MAX_PACKET then
      self._broken = ("a packet of %d bytes"):format(len)
      return false
    end
    if #buf - pos + 1 < 4 + len then break end
    local t = buf:byte(pos + 4)
    if t == VERSION and not self.version then
      self._replies[0] = { type = t, data = buf:sub(pos + 4, pos + 3 + len), pos = 2 }
    elseif len < 5 then
      self._broken = "a packet without an id"
      return false
    else
      local id = string.unpack(">I4", buf, pos + 5)
      if self._pending[id] then
        self._pending[id] = nil
        self._replies[id] = { type = t, data = buf:sub(pos + 4, pos + 3 + len), pos = 6 }
      elseif self._discard[id] then
        self._discard[id] = nil -- the answer to a request given up: dropped
      else
        self._broken = ("a reply to no request (id %d)"):format(id)
        return false
      end
    end
    pos = pos + 4 + len
  end
  if pos > 1 then self._in = buf:sub(pos) end -- once per pump, not once per packet
  return true
end

--- Gives up on request id: its reply, when it comes, is dropped.
function SFTP:_abandon(id)
  if not id then return end
  if self._pending[id] then
    self._pending[id] = nil
    self._discard[id] = true
  end
  self._replies[id] = nil
end

--- The client has ended under the caller (the server broke the protocol, or the session went):
--- calls then fail, they do not raise.
function SFTP:_end()
  self._ended = true
  if not self._op:done() then self._op:cancel() end
  if self._conn then
    self._s:_give_slot(self._conn)
    self._conn = nil
  end
end

--- Waits for reply id: the reply, or nil, msg, CODE, err.
function SFTP:_wait(id, what, path)
  local op = self._op
  if self._broken then
    self:_end()
    return self:_fail("EPROTO", what, path, "the server sent %s", self._broken)
  end
  if id == false then
    return self:_fail("ECLOSED", what, path, "the SFTP session has ended")
  end
  local ok = sched.await_until(op, function() return not self:_pump() or self._replies[id] ~= nil end, TIMEOUT)
  if self._broken then
    self:_end()
    return self:_fail("EPROTO", what, path, "the server sent %s", self._broken)
  end
  local r = self._replies[id]
  if r then
    self._replies[id] = nil
    if id == 0 then -- VERSION: the extensions the server offers
      local pok, err = pcall(function()
        local version, pos = string.unpack(">I4", r.data, r.pos)
        if version ~= 3 then error("version " .. version .. ", not 3") end
        self.version = version
        while pos <= #r.data do
          local name, data
          name, data, pos = string.unpack(">s4s4", r.data, pos)
          self.extensions[name] = data
        end
      end)
      if not pok then return self:_fail("EPROTO", what, path, "a malformed VERSION (%s)", err) end
    end
    return r
  end
  self:_abandon(id)
  if op:done() or self._ended then
    local _, msg = op:result()
    self:_end()
    return self:_fail("ECLOSED", what, path, "the SFTP session has ended%s", msg and (": " .. msg) or "")
  end
  if not ok then return self:_fail("ETIMEDOUT", what, path, "no reply in %gs", TIMEOUT) end
  return self:_fail("EIO", what, path, "no reply")
end

--- Sends a request (type and its body after the id); its id, or false when the client has ended
--- (the wait for it then says why). Raises only once the caller closed it.
function SFTP:_send(t, body)
  if self._closed then error("sshchain: the SFTP client is closed", 3) end
  if self._ended or self._broken or self._op:done() then return false end
  local id = self._next
  self._next = id % 0xFFFFFFFF + 1
  if not self._op:write(string.pack(">s4", string.pack(">BI4", t, id) .. body)) then return false end
  self._pending[id] = true
  return id
end

local function status_code(r)
  local ok, code = pcall(string.unpack, ">I4", r.data, r.pos)
  return ok and code or nil
end

--- A STATUS reply as a result: true for OK, else nil, msg, CODE, err.
function SFTP:_status(r, what, path)
  local ok, code, msg = pcall(string.unpack, ">I4s4", r.data, r.pos)
  if not ok then code, msg = 4, "malformed status" end
  if code == 0 then return true end
  local name = STATUS_CODE[code] or "EIO"
  local text = STATUS_TEXT[code] or ("status " .. code)
  msg = (msg or ""):gsub("%c", " ")
  return self:_fail(name, what, path, "%s%s", text, msg ~= "" and msg:lower() ~= text and (" (" .. msg .. ")") or "")
end

--- A STATUS reply where data was due: its failure, EPROTO for an OK (never a result: a READ or
--- READDIR answered OK must not read as the end).
function SFTP:_no_data(r, what, path)
  local ok, m, c, e = self:_status(r, what, path)
  if ok then return self:_fail("EPROTO", what, path, "the server answered OK without the data") end
  return nil, m, c, e
end

--- One request and its reply of type want: the reply's data and position after the id, or true
--- for a STATUS OK when want is STATUS; or nil, msg, CODE, err.
function SFTP:_call(t, body, want, what, path)
  local r, msg, code, err = self:_wait(self:_send(t, body), what, path)
  if not r then return nil, msg, code, err end
  if r.type == STATUS then
    if want == STATUS then return self:_status(r, what, path) end
    return self:_no_data(r, what, path)
  end
  if r.type ~= want then return self:_fail("EPROTO", what, path, "an unexpected reply (type %d)", r.type) end
  return r.data, r.pos
end

--- Runs parse(data, pos) on a reply; its results, or EPROTO.
function SFTP:_parse(what, path, parse, data, pos)
  local res = table.pack(pcall(parse, data, pos))
  if not res[1] then return self:_fail("EPROTO", what, path, "a malformed reply (%s)", res[2]) end
  return table.unpack(res, 2, res.n)
end

local function path_body(path) return string.pack(">s4", path) end
local function attrs_only(data, pos) return (parse_attrs(data, pos)) end
local function handle_of(data, pos) return (string.unpack(">s4", data, pos)) end

local function first_name(data, pos)
  local n
  n, pos = string.unpack(">I4", data, pos)
  if n < 1 then error("no name") end
  return (string.unpack(">s4", data, pos))
end

function SFTP:stat(path)
  bad_path(path, 1, "stat")
  local data, pos, code, err = self:_call(STAT, path_body(path), ATTRS, "stat", path)
  if not data then return nil, pos, code, err end
  return self:_parse("stat", path, attrs_only, data, pos)
end

function SFTP:lstat(path)
  bad_path(path, 1, "lstat")
  local data, pos, code, err = self:_call(LSTAT, path_body(path), ATTRS, "lstat", path)
  if not data then return nil, pos, code, err end
  return self:_parse("lstat", path, attrs_only, data, pos)
end

function SFTP:realpath(path)
  bad_path(path, 1, "realpath")
  local data, pos, code, err = self:_call(REALPATH, path_body(path), NAME, "realpath", path)
  if not data then return nil, pos, code, err end
  return self:_parse("realpath", path, first_name, data, pos)
end

function SFTP:readlink(path)
  bad_path(path, 1, "readlink")
  local data, pos, code, err = self:_call(READLINK, path_body(path), NAME, "readlink", path)
  if not data then return nil, pos, code, err end
  return self:_parse("readlink", path, first_name, data, pos)
end

--- A failure of a call that makes path: EEXIST when something is there now (SFTP v3 has no
--- code for it: OpenSSH answers "failure").
function SFTP:_exists_or(path, r, msg, code, err)
  if code == "EIO" and self:lstat(path) then
    return self:_fail("EEXIST", err and err.message:match("sftp: (%a+)") or "create", path, "it exists already")
  end
  return r, msg, code, err
end

local MKDIR_OPTS = { mode = { type = "number", integer = true, min = 0, max = 4095 }, parents = "boolean" }

--- fs:mkdir(path [, {mode=, parents=true}]): parents makes the missing directories above it and
--- accepts one that exists, as mkdir -p.
function SFTP:mkdir(path, opts)
  bad_path(path, 1, "mkdir")
  opts = errors.check_options(opts, MKDIR_OPTS, "mkdir", 2)
  local body = path_body(path) .. attrs_bytes({ mode = opts.mode or 511 })
  if opts.parents then
    local st = self:stat(path)
    if st and st.type == "dir" then return true end
    local parent = path:match("^(.+)/[^/]+/*$")
    if parent and parent ~= "" then
      local ok, msg, code, err = self:mkdir(parent, { mode = opts.mode, parents = true })
      if not ok then return nil, msg, code, err end
    end
  end
  local r, msg, code, err = self:_call(MKDIR, body, STATUS, "mkdir", path)
  if r then return true end
  if opts.parents then
    local st = self:stat(path)
    if st and st.type == "dir" then return true end -- made meanwhile
  end
  return self:_exists_or(path, r, msg, code, err)
end

function SFTP:rmdir(path)
  bad_path(path, 1, "rmdir")
  return self:_call(RMDIR, path_body(path), STATUS, "rmdir", path)
end

function SFTP:remove(path)
  bad_path(path, 1, "remove")
  return self:_call(REMOVE, path_body(path), STATUS, "remove", path)
end

--- fs:rename(from, to [, {overwrite=true}]): overwrite replaces an existing `to` (atomically with
--- the posix-rename@openssh.com extension; else by removing it first).
function SFTP:rename(from, to, opts)
  bad_path(from, 1, "rename")
  bad_path(to, 2, "rename")
  opts = errors.check_options(opts, { overwrite = "boolean" }, "rename", 2)
  if opts.overwrite and self.extensions["posix-rename@openssh.com"] then
    return self:_call(EXTENDED, string.pack(">s4s4s4", "posix-rename@openssh.com", from, to), STATUS, "rename", from)
  end
  if opts.overwrite then
    local st = self:lstat(to)
    if st and st.type ~= "dir" then
      local ok, msg, code, err = self:remove(to)
      if not ok then return nil, msg, code, err end
    end
  end
  local r, msg, code, err = self:_call(RENAME, string.pack(">s4s4", from, to), STATUS, "rename", from)
  if r then return true end
  if code == "EIO" and self:lstat(from) and self:lstat(to) then
    return self:_fail("EEXIST", "rename", to, "it exists already (overwrite = true replaces it)")
  end
  return nil, msg, code, err
end

--- fs:symlink(target, path): path becomes a link to target (OpenSSH's argument order).
function SFTP:symlink(target, path)
  bad_path(target, 1, "symlink")
  bad_path(path, 2, "symlink")
  local r, msg, code, err = self:_call(SYMLINK, string.pack(">s4s4", target, path), STATUS, "symlink", path)
  if r then return true end
  return self:_exists_or(path, r, msg, code, err)
end

function SFTP:chmod(path, mode)
  bad_path(path, 1, "chmod")
  if math.type(mode) ~= "integer" or mode < 0 or mode > 4095 then error("bad argument #2 to 'chmod' (mode 0..0o7777 expected)", 2) end
  return self:_call(SETSTAT, path_body(path) .. attrs_bytes({ mode = mode }), STATUS, "chmod", path)
end

function SFTP:utime(path, atime, mtime)
  bad_path(path, 1, "utime")
  for i, t in ipairs { atime, mtime } do
    if math.type(t) ~= "integer" or t < 0 or t > 0xFFFFFFFF then
      error(("bad argument #%d to 'utime' (seconds since 1970 expected)"):format(i + 1), 2)
    end
  end
  return self:_call(SETSTAT, path_body(path) .. attrs_bytes({ atime = atime, mtime = mtime }), STATUS, "utime", path)
end

local STATVFS = { "bsize", "frsize", "blocks", "bfree", "bavail", "files", "ffree", "favail", "fsid", "flag", "namemax" }

--- fs:statvfs(path) -> {bsize=, frsize=, blocks=, bfree=, bavail=, files=, ffree=, favail=, fsid=,
--- flag=, namemax=} (statvfs@openssh.com)
function SFTP:statvfs(path)
  bad_path(path, 1, "statvfs")
  if not self.extensions["statvfs@openssh.com"] then
    return self:_fail("EIO", "statvfs", path, "the server does not offer statvfs@openssh.com")
  end
  local data, pos, code, err = self:_call(EXTENDED, string.pack(">s4s4", "statvfs@openssh.com", path),
    EXTENDED_REPLY, "statvfs", path)
  if not data then return nil, pos, code, err end
  return self:_parse("statvfs", path, function(d, p)
    local v = table.pack(string.unpack(">I8I8I8I8I8I8I8I8I8I8I8", d, p))
    local t = {}
    for i, k in ipairs(STATVFS) do t[k] = v[i] end
    return t
  end, data, pos)
end

--- Entries of a NAME reply: a list of {name=, longname=, attrs}.
local function parse_names(data, pos)
  local n
  n, pos = string.unpack(">I4", data, pos)
  if n > 100000 then error("too many names") end
  local list = {}
  for i = 1, n do
    local name, a, _
    name, _, pos = string.unpack(">s4s4", data, pos)
    a, pos = parse_attrs(data, pos)
    a.name = name
    list[i] = a
  end
  return list
end

--- fs:list(dir) -> entries sorted by name (without . and ..): {name=, type=, size=, mode=, uid=,
--- gid=, atime=, mtime=, target= (of a link)}.
function SFTP:list(dir)
  bad_path(dir, 1, "list")
  local h, hpos, code, err = self:_call(OPENDIR, path_body(dir), HANDLE, "list", dir)
  if not h then return nil, hpos, code, err end
  local handle, m0, c0, e0 = self:_parse("list", dir, handle_of, h, hpos)
  if not handle then return nil, m0, c0, e0 end
  local out, failure, ended = {}, nil, false
  for _ = 1, 10000 do
    local r, msg, c, e = self:_wait(self:_send(READDIR, string.pack(">s4", handle)), "list", dir)
    if not r then failure = { msg, c, e } break end
    if r.type == STATUS then
      ended = true
      if status_code(r) ~= 1 then failure = { select(2, self:_no_data(r, "list", dir)) } end
      break
    end
    if r.type ~= NAME then failure = { select(2, self:_fail("EPROTO", "list", dir, "an unexpected reply")) } break end
    local names, m, c2, e2 = self:_parse("list", dir, parse_names, r.data, r.pos)
    if not names then failure = { m, c2, e2 } break end
    for _, a in ipairs(names) do
      if a.name ~= "." and a.name ~= ".." then out[#out + 1] = a end
    end
    if #out > 1000000 then break end
  end
  if not ended and not failure then
    failure = { select(2, self:_fail("EPROTO", "list", dir, "no end to the listing (%d entries)", #out)) }
  end
  if not self._ended then self:_wait(self:_send(CLOSE, string.pack(">s4", handle)), "list", dir) end
  if failure then return nil, failure[1], failure[2], failure[3] end
  table.sort(out, function(a, b) return a.name < b.name end)
  local base = dir:gsub("/+$", "")
  for _, a in ipairs(out) do -- link targets, asked for all at once
    if a.type == "link" then
      a._id = self:_send(READLINK, path_body((base == "" and "/" or base .. "/") .. a.name))
    end
  end
  for _, a in ipairs(out) do
    if a._id then
      local r = self:_wait(a._id, "list", dir)
      if r and r.type == NAME then
        local ok, target = pcall(first_name, r.data, r.pos)
        if ok then a.target = target end
      end
      a._id = nil
    end
  end
  return out
end

--- A glob component as an anchored Lua pattern (* ? [..] [!..]; a backslash quotes).
local function glob_pattern(g)
  local out, i = { "^" }, 1
  while i <= #g do
    local c = g:sub(i, i)
    if c == "\\" and i < #g then
      i = i + 1
      out[#out + 1] = "%" .. g:sub(i, i)
    elseif c == "*" then out[#out + 1] = "[^/]*"
    elseif c == "?" then out[#out + 1] = "[^/]"
    elseif c == "[" and g:find("]", i + (g:sub(i + 1, i + 1) == "!" and 3 or 2), true) then
      -- a ] right after [ or [! is a member, as in a shell
      local neg = g:sub(i + 1, i + 1) == "!"
      local j = g:find("]", i + (neg and 3 or 2), true)
      local set = g:sub(i + (neg and 2 or 1), j - 1):gsub("%%", "%%%%"):gsub("%]", "%%]"):gsub("%^", "%%^")
      out[#out + 1] = "[" .. (neg and "^" or "") .. set .. "]"
      i = j
    elseif c:match("%p") then out[#out + 1] = "%" .. c
    else out[#out + 1] = c end
    i = i + 1
  end
  out[#out + 1] = "$"
  return table.concat(out)
end
M.glob_pattern = glob_pattern

--- fs:glob(pattern) -> the paths that match, sorted (an empty list when none), as a shell
--- expands them: * and ? do not match a leading dot; or nil, msg, CODE, err when a directory
--- could not be listed (other than missing).
function SFTP:glob(pattern)
  bad_path(pattern, 1, "glob")
  local absolute = pattern:sub(1, 1) == "/"
  local parts = {}
  for p in pattern:gmatch("[^/]+") do parts[#parts + 1] = p end
  local paths = { absolute and "/" or "" }
  for k, part in ipairs(parts) do
    local next_paths = {}
    local join = function(base, name) return base == "" and name or (base:sub(-1) == "/" and base .. name or base .. "/" .. name) end
    if not part:find("[*?[]") then
      for _, b in ipairs(paths) do
        local p = join(b, (part:gsub("\\(.)", "%1")))
        if k < #parts or self:lstat(p) then next_paths[#next_paths + 1] = p end
      end
    else
      local pat = glob_pattern(part)
      for _, b in ipairs(paths) do
        local entries, msg, code, err = self:list(b == "" and "." or b)
        if not entries and code ~= "ENOENT" then return nil, msg, code, err end
        for _, e in ipairs(entries or {}) do
          if e.name:find(pat) and (e.name:sub(1, 1) ~= "." or part:sub(1, 1) == ".") then
            if k == #parts or e.type == "dir" or e.type == "link" then next_paths[#next_paths + 1] = join(b, e.name) end
          end
        end
      end
    end
    paths = next_paths
  end
  table.sort(paths)
  return paths
end

-- ---- files ----

local MODES = { r = O_READ, w = O_WRITE | O_CREAT | O_TRUNC, a = O_WRITE | O_CREAT | O_APPEND,
  ["r+"] = O_READ | O_WRITE, ["w+"] = O_READ | O_WRITE | O_CREAT | O_TRUNC,
  ["a+"] = O_READ | O_WRITE | O_CREAT | O_APPEND }

--- fs:open(path [, mode]) -> a File ("r" by default; "w", "a", "r+", "w+", "a+", with an
--- optional "b"), or nil, msg, CODE, err. Other modes raise.
function SFTP:open(path, mode)
  bad_path(path, 1, "open")
  mode = mode or "r"
  local flags = type(mode) == "string" and MODES[(mode:gsub("b", ""))]
  if not flags then error(("bad argument #2 to 'open' (invalid mode '%s')"):format(tostring(mode)), 2) end
  local data, pos, code, err = self:_call(OPEN, string.pack(">s4I4", path, flags) .. attrs_bytes({ mode = 420 }),
    HANDLE, "open", path)
  if not data then return nil, pos, code, err end
  local handle, m, c, e = self:_parse("open", path, handle_of, data, pos)
  if not handle then return nil, m, c, e end
  local f = setmetatable({ _fs = self, _h = handle, path = path, _pos = 0, _ahead = {}, _writes = {},
    _rbuf = "", _append = flags & O_APPEND ~= 0, _turn = sched.semaphore(1) }, File)
  if f._append then
    local st = f:_fstat()
    f._pos = st and st.size or 0
  end
  return f
end

function File:_check()
  if self._closed then error("sshchain: the SFTP file is closed", 3) end
  if self._fs._closed then error("sshchain: the SFTP client is closed", 3) end
  return self._fs
end

--- The file's attributes, or nil, msg, CODE, err.
function File:_fstat()
  local fs = self._fs
  local data, pos, code, err = fs:_call(FSTAT, string.pack(">s4", self._h), ATTRS, "fstat", self.path)
  if not data then return nil, pos, code, err end
  return fs:_parse("fstat", self.path, attrs_only, data, pos)
end

--- fn(f, ...) with the file to itself: a call from another task waits its turn, so that calls
--- from several tasks come one after the other, each whole, as if each had the file alone (the
--- read-ahead and the position are the file's, not the call's). The turn is given up however
--- the call ends: a return, a raise, or its coroutine closed while it waits for a reply. A call
--- that waited for its turn behind a close fails ECLOSED (a close is done already).
local Turn = { __close = function(t) t.turn:release() end }
local function in_turn(f, what, fn, ...)
  f._turn:acquire()
  local _ <close> = setmetatable({ turn = f._turn }, Turn)
  if f._closed then
    if what == "close" then return true end
    return f._fs:_fail("ECLOSED", what, f.path, "the file was closed by another task")
  end
  return fn(f, ...)
end

--- Waits for the writes in flight; the first failure among them.
function File:_drain_writes()
  local fs, first = self._fs, nil
  if not self._writes[1] then return true end
  for _, id in ipairs(self._writes) do
    local r, msg, code, err = fs:_wait(id, "write", self.path)
    if r and r.type ~= STATUS then
      r, msg, code, err = fs:_fail("EPROTO", "write", self.path, "an unexpected reply (type %d)", r.type)
    elseif r then
      r, msg, code, err = fs:_status(r, "write", self.path)
    end
    if not r and not first then first = { msg, code, err } end
  end
  self._writes = {}
  if first then return nil, first[1], first[2], first[3] end
  if self._append then -- the server wrote at the end, whatever the offsets said
    local st = self:_fstat()
    if st and st.size then self._pos = st.size end
  end
  return true
end

--- Forgets the read-ahead and what it had brought (after a seek, a write, a failure): the replies
--- still to come are dropped as they arrive, not waited for.
function File:_drop_ahead()
  for _, a in ipairs(self._ahead) do self._fs:_abandon(a.id) end
  self._ahead = {}
  self._rbuf = ""
end

--- f:write(s): sends s at the position (pipelined: failures come by the next call that waits,
--- at the latest close); true, or nil, msg, CODE, err.
function File:write(s)
  self:_check()
  if type(s) ~= "string" then error("bad argument #1 to 'write' (string expected)", 2) end
  return in_turn(self, "write", File._write, s)
end

function File:_write(s)
  local fs = self:_check()
  self:_drop_ahead()
  for i = 1, #s, CHUNK do
    local part = s:sub(i, i + CHUNK - 1)
    local id = fs:_send(WRITE, string.pack(">s4I8s4", self._h, self._pos, part))
    if not id then return fs:_wait(false, "write", self.path) end
    self._writes[#self._writes + 1] = id
    self._pos = self._pos + #part
    if #self._writes >= AHEAD then
      local ok, msg, code, err = self:_drain_writes()
      if not ok then return nil, msg, code, err end
    end
  end
  return true
end

--- f:read(n) -> up to n bytes from the position (fewer only at the end), nil at the end, or
--- nil, msg, CODE, err (the position stays where the data read so far ends). Reads ahead:
--- AHEAD requests in flight, and what a reply brought beyond n is kept for the next read.
function File:read(n)
  self:_check()
  if math.type(n) ~= "integer" or n < 1 then error("bad argument #1 to 'read' (byte count expected)", 2) end
  return in_turn(self, "read", File._read, n)
end

function File:_read(n)
  local fs = self:_check()
  local ok, msg, code, err = self:_drain_writes()
  if not ok then return nil, msg, code, err end
  local parts, got = {}, 0
  local function fail(m, c, e)
    self:_drop_ahead()
    return nil, m, c, e
  end
  while got < n do
    if #self._rbuf > 0 then -- the tail of the last reply: it starts at the position
      local take = math.min(#self._rbuf, n - got)
      parts[#parts + 1] = self._rbuf:sub(1, take)
      self._rbuf = self._rbuf:sub(take + 1)
      got, self._pos = got + take, self._pos + take
    else
      -- keep the read-ahead full, from where the last request ends
      local ahead = self._ahead
      local from = ahead[#ahead] and (ahead[#ahead].off + ahead[#ahead].len) or self._pos
      while #ahead < AHEAD do
        local id = fs:_send(READ, string.pack(">s4I8I4", self._h, from, CHUNK))
        if not id then return fail(select(2, fs:_wait(false, "read", self.path))) end
        ahead[#ahead + 1] = { id = id, off = from, len = CHUNK }
        from = from + CHUNK
      end
      local a = table.remove(ahead, 1)
      local r, m, c, e = fs:_wait(a.id, "read", self.path)
      if not r then return fail(m, c, e) end
      if r.type == STATUS then
        if status_code(r) ~= 1 then return fail(select(2, fs:_no_data(r, "read", self.path))) end
        self:_drop_ahead()
        break -- the end
      end
      if r.type ~= DATA then return fail(select(2, fs:_fail("EPROTO", "read", self.path, "an unexpected reply"))) end
      local data, pm, pc, pe = fs:_parse("read", self.path, handle_of, r.data, r.pos)
      if not data then return fail(pm, pc, pe) end
      if #data > a.len then return fail(select(2, fs:_fail("EPROTO", "read", self.path, "more data than asked for"))) end
      if #data == 0 then
        self:_drop_ahead()
        break
      end
      if #data < a.len then self:_drop_ahead() end -- short: what is in flight no longer follows on
      self._rbuf = data
    end
  end
  if got == 0 then return nil end
  return table.concat(parts)
end

--- f:seek([whence [, offset]]) -> the position, as Lua's file:seek ("set", "cur", "end").
function File:seek(whence, offset)
  self:_check()
  whence, offset = whence or "cur", offset or 0
  if whence ~= "set" and whence ~= "cur" and whence ~= "end" then
    error("bad argument #1 to 'seek' (invalid option '" .. tostring(whence) .. "')", 2)
  end
  if math.type(offset) ~= "integer" then error("bad argument #2 to 'seek' (integer expected)", 2) end
  return in_turn(self, "seek", File._seek, whence, offset)
end

function File:_seek(whence, offset)
  self:_check()
  local ok, msg, code, err = self:_drain_writes()
  if not ok then return nil, msg, code, err end
  local base = self._pos
  if whence == "set" then base = 0 end
  if whence == "end" then
    local st, m, c, e = self:_fstat()
    if not st then return nil, m, c, e end
    if not st.size then return self._fs:_fail("EIO", "seek", self.path, "the server gives no size") end
    base = st.size
  end
  if base + offset < 0 then return self._fs:_fail("EIO", "seek", self.path, "before the start") end
  self:_drop_ahead()
  self._pos = base + offset
  return self._pos
end

--- f:close(): the writes in flight are waited for (their failure is the result); safe twice.
function File:close()
  if self._closed then return true end
  return in_turn(self, "close", File._close)
end

function File:_close()
  local fs = self._fs
  local ok, msg, code, err = true, nil, nil, nil
  if not fs._closed and not fs._ended then
    self:_drop_ahead()
    ok, msg, code, err = self:_drain_writes()
    local r, m, c, e = fs:_call(CLOSE, string.pack(">s4", self._h), STATUS, "close", self.path)
    if ok and not r then ok, msg, code, err = nil, m, c, e end
  end
  self._closed = true
  if not ok then return nil, msg, code, err end
  return true
end
File.__close = File.close

--- fs:read(path) -> the whole content of a (small) file, or nil, msg, CODE, err.
function SFTP:read(path)
  bad_path(path, 1, "read")
  local f, msg, code, err = self:open(path, "r")
  if not f then return nil, msg, code, err end
  local parts = {}
  for _ = 1, 1e9 do
    local chunk, m, c, e = f:read(1048576)
    if not chunk then
      f:close()
      if m then return nil, m, c, e end
      break
    end
    parts[#parts + 1] = chunk
  end
  return table.concat(parts)
end

--- fs:write(path, data): the whole file (made, or truncated); true, or nil, msg, CODE, err.
function SFTP:write(path, data)
  bad_path(path, 1, "write")
  if type(data) ~= "string" then error("bad argument #2 to 'write' (string expected)", 2) end
  local f, msg, code, err = self:open(path, "w")
  if not f then return nil, msg, code, err end
  local ok, m, c, e = f:write(data)
  local cok, cm, cc, ce = f:close()
  if not ok then return nil, m, c, e end
  if not cok then return nil, cm, cc, ce end
  return true
end

--- fs:close(): ends the SFTP session (its channel); safe twice. Closing the SSH session closes
--- it too (calls then fail ECLOSED).
function SFTP:close()
  if self._closed then return end
  self._closed = true
  self:_end()
end
SFTP.__close = SFTP.close
SFTP.__gc = function(fs) pcall(SFTP.close, fs) end

return M
