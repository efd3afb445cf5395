-- sshchain: SSH through chains and trees of jump hosts. The public API; the C primitives it
-- composes are in sshchain.core (sessions, ops, the event loop).
local core = require "sshchain.core"
local sched = require "sshchain.sched"
local config = require "sshchain.config"

local M = { _VERSION = "sshchain 0.1.0" }
local await = sched.await
M.spawn, M.sleep, M.run, M.parallel = sched.spawn, sched.sleep, sched.run, sched.parallel
M.config = config

---------------------------------------------------------------------------------------------------
-- Host specs

local SPEC_KEYS = {
  host = "string", port = "number", user = "string", password = "string", identity = true,
  passphrase = "string", agent = "boolean", known_hosts = "string", host_key = "string",
  timeout = "number", keepalive = "number", name = "string", max_sessions = "number",
}

local function home() return os.getenv("HOME") or "" end

local function expand(path)
  if path:sub(1, 2) == "~/" then return home() .. path:sub(2) end
  return path
end

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

--- Parses "user@host:port" (also "host", "host:port", "user@[v6addr]:port").
local function parse_target(str)
  local user, rest = str:match("^([^@]+)@(.+)$")
  rest = rest or str
  local host, port = rest:match("^%[(.+)%]:?(%d*)$")
  if not host then
    host, port = rest:match("^([^:]+):(%d+)$")
    host = host or rest
  end
  local spec = { host = host, user = user }
  if port and port ~= "" then spec.port = tonumber(port) end
  return spec
end
M.parse_target = parse_target

--- A full spec table from a string or table spec, with defaults filled in (misuse raises).
local function normalize_spec(spec, defaults, level)
  level = (level or 1) + 1
  if type(spec) == "string" then spec = parse_target(spec) end
  if type(spec) ~= "table" then error("host spec must be a table or a \"user@host:port\" string", level) end
  local s = {}
  for k, v in pairs(defaults or {}) do
    if SPEC_KEYS[k] then s[k] = v end
  end
  for k, v in pairs(spec) do
    local want = SPEC_KEYS[k]
    if not want then error("unknown host spec field '" .. tostring(k) .. "'", level) end
    if want ~= true and type(v) ~= want then
      error("host spec field '" .. k .. "' must be a " .. want .. " (got " .. type(v) .. ")", level)
    end
    s[k] = v
  end
  if type(s.host) ~= "string" or s.host == "" then error("host spec needs a host", level) end
  local ids = s.identity
  if type(ids) == "string" then ids = { ids } end
  if ids ~= nil and type(ids) ~= "table" then error("identity must be a path or a list of paths", level) end
  if ids then
    local list = {}
    for i, p in ipairs(ids) do list[i] = expand(p) end
    ids = list
  elseif not s.password then
    ids = {}
    for _, f in ipairs { "id_ed25519", "id_ecdsa", "id_rsa" } do
      local p = home() .. "/.ssh/" .. f
      if file_exists(p) then ids[#ids + 1] = p end
    end
  end
  s.identity = ids
  if s.known_hosts then s.known_hosts = expand(s.known_hosts) end
  return s
end
M.normalize_spec = normalize_spec

---------------------------------------------------------------------------------------------------
-- Sessions

local Session = {}
Session.__index = Session
M.Session = Session

local function check_session(self, method)
  if getmetatable(self) ~= Session then
    error("bad self to '" .. method .. "' (sshchain session expected)", 3)
  end
  return self._c
end

--- Policy knobs (defaults follow OpenSSH's stock server limits).
M.settings = {
  handshakes_per_server = 8, -- concurrent unauthenticated connections per server (MaxStartups 10)
  handshake_retries = 2,     -- a handshake the server drops (MaxStartups) is tried again
  max_sessions = 10,         -- channels per connection (sshd's MaxSessions); spec.max_sessions
  max_connections = 16,      -- connections per session object when channels overflow
}

local pacers = {} -- "host:port" -> semaphore for handshakes to that server

local function pacer(spec)
  local key = spec.host .. ":" .. (spec.port or 22)
  local sem = pacers[key]
  if not sem then
    sem = sched.semaphore(M.settings.handshakes_per_server)
    pacers[key] = sem
  end
  return sem
end

--- Starts one core session and waits until it is ready. Paced per server; a handshake the server
--- drops (MaxStartups) is retried.
local function open_core(spec, parent_core)
  local sem = pacer(spec)
  local attempt = 0
  while true do
    sem:acquire()
    local c, op = core.session_start(spec, parent_core)
    local ok, err = pcall(await, op)
    sem:release()
    if not ok then
      c:close()
      error(err, 0)
    end
    local done, msg, code = op:result()
    if done then return c end
    c:close()
    local dropped = code == "ECONNECT" and msg:find(": handshake: ", 1, true)
    if not dropped or attempt >= M.settings.handshake_retries then return nil, msg, code end
    attempt = attempt + 1
    sched.sleep(0.05 * attempt)
  end
end

local function new_session(c, spec, parent)
  local limit = spec.max_sessions or M.settings.max_sessions
  return setmetatable({
    _c = c, spec = spec, parent = parent, host = spec.name or spec.host,
    _conns = { { c = c, active = 0, limit = limit } }, _slot_free = sched.cond(),
  }, Session)
end

local function connect_one(spec, parent)
  local c, msg, code = open_core(spec, parent and parent._c)
  if not c then return nil, msg, code end
  return new_session(c, spec, parent)
end

-- Jump hosts are shared: chains that start with the same hops (same specs) ride on the same
-- sessions, so many targets behind a jump host use one connection to it.
local shared = {} -- key -> { session=, refs=, pending=cond, err= }

local function spec_key(spec, parent)
  local keys = {}
  for k in pairs(spec) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = { parent and parent._key or "" }
  for _, k in ipairs(keys) do
    local v = spec[k]
    if type(v) == "table" then v = table.concat(v, "\0") end
    parts[#parts + 1] = k .. "=" .. tostring(v)
  end
  return table.concat(parts, "\1")
end

local function acquire_jump(spec, parent)
  local key = spec_key(spec, parent)
  local e = shared[key]
  if e and e.pending then e.pending:wait() end
  if e and e.err then return nil, e.err[1], e.err[2] end
  if e and e.session and e.session._c:state() == "ready" then
    e.refs = e.refs + 1
    return e.session
  end
  e = { refs = 1, pending = sched.cond() }
  shared[key] = e
  local s, msg, code = connect_one(spec, parent)
  local pending = e.pending
  e.pending = nil
  if not s then
    e.err = { msg, code }
    shared[key] = nil
  else
    s._key, s._shared, e.session = key, e, s
  end
  pending:signal()
  return s, msg, code
end

local function release_jump(s)
  local e = s._shared
  e.refs = e.refs - 1
  if e.refs <= 0 then
    if shared[s._key] == e then shared[s._key] = nil end
    s:close()
  end
end

local function resolve_hops(hops, opts, level)
  if type(hops) == "table" and hops[1] == nil and next(hops) ~= nil then hops = { hops } end
  if type(hops) == "string" then
    local path = opts.config or (home() .. "/.ssh/config")
    if opts.config or (not hops:find("@") and file_exists(path)) then
      local list, err = config.resolve(hops, { config = path })
      if not list then return nil, err end
      hops = list
    else
      hops = { hops }
    end
  end
  if type(hops) ~= "table" or hops[1] == nil then
    error("bad argument #1 to 'connect' (host spec, list of specs or ssh_config name expected)", level)
  end
  local list = {}
  for i, h in ipairs(hops) do list[i] = normalize_spec(h, opts, level) end
  return list
end

local function release_owned(owned)
  for i = #owned, 1, -1 do
    if owned[i]._shared then release_jump(owned[i]) else owned[i]:close() end
  end
end

--- connect(hops [, opts]): a session to the last hop, reached through the others in order.
--- opts.config: ssh_config path (hops may then be a Host name); opts.share=false: private jumps.
function M.connect(hops, opts)
  if opts ~= nil and type(opts) ~= "table" then error("bad argument #2 to 'connect' (table expected)", 2) end
  opts = opts or {}
  local list, err = resolve_hops(hops, opts, 3)
  if not list then return nil, "EIO: " .. err, "EIO" end
  local chain, parent = {}, nil
  for i, spec in ipairs(list) do
    local s, msg, code
    if i < #list and opts.share ~= false then
      s, msg, code = acquire_jump(spec, parent)
    else
      s, msg, code = connect_one(spec, parent)
    end
    if not s then
      release_owned(chain)
      return nil, msg, code
    end
    chain[#chain + 1] = s
    parent = s
  end
  local target = table.remove(chain)
  target._owned = chain
  return target
end

--- s:connect(spec): a child session reached through s (sharing s's connection).
function Session:connect(spec, opts)
  local c = check_session(self, "connect")
  if c:state() == "closed" then error("sshchain: session is closed", 2) end
  return connect_one(normalize_spec(spec, opts, 2), self)
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end
M.shell_quote = shell_quote

local function env_prefix(env)
  local names = {}
  for k in pairs(env) do
    if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then
      error("exec: env names must be identifiers (got " .. tostring(k) .. ")", 4)
    end
    names[#names + 1] = k
  end
  table.sort(names)
  local parts = {}
  for _, k in ipairs(names) do parts[#parts + 1] = k .. "=" .. shell_quote(tostring(env[k])) end
  return #parts > 0 and ("export " .. table.concat(parts, " ") .. "; ") or ""
end

local EXEC_OPTS = { stdin = "string", pty = "boolean", sudo_password = "string", timeout = "number",
  env = "table", on_stdout = "function", on_stderr = "function" }

--- Takes a channel slot: a connection of this session below its channel limit (sshd's
--- MaxSessions). When all are full, another connection to the same host through the same parent
--- is opened (up to settings.max_connections), or the caller waits for a free slot.
function Session:_take_slot()
  while true do
    local state, msg, code = self._c:state()
    if state == "closed" then error("sshchain: session is closed", 3) end
    if state ~= "ready" then return nil, msg, code end
    for _, conn in ipairs(self._conns) do
      if conn.active < conn.limit and conn.c:state() == "ready" then
        conn.active = conn.active + 1
        return conn
      end
    end
    if #self._conns < M.settings.max_connections and not self._opening then
      self._opening = true
      local c, omsg, ocode = open_core(self.spec, self.parent and self.parent._c)
      self._opening = false
      self._slot_free:signal()
      if not c then return nil, omsg, ocode end
      if self._c:state() == "closed" then c:close() else
        self._conns[#self._conns + 1] = { c = c, active = 0, limit = self._conns[1].limit }
      end
    else
      self._slot_free:wait()
    end
  end
end

function Session:_give_slot(conn)
  conn.active = conn.active - 1
  self._slot_free:signal()
end

--- Runs one command on a connection of the session; returns the op once done.
local function run_exec(conn, cmd, copts, opts)
  local op = conn.c:exec_start(cmd, copts)
  if not copts.stream then
    await(op)
    return op
  end
  local function deliver(o, e)
    if #o > 0 then
      if opts.on_stdout then opts.on_stdout(o) else opts._kept[1][#opts._kept[1] + 1] = o end
    end
    if #e > 0 then
      if opts.on_stderr then opts.on_stderr(e) else opts._kept[2][#opts._kept[2] + 1] = e end
    end
  end
  repeat
    await(op, true)
    deliver(op:take())
  until op:done()
  deliver(op:take())
  return op
end

--- s:exec(cmd [, opts]) -> {stdout, stderr, status, signal, ok} | nil, msg, CODE
function Session:exec(cmd, opts)
  check_session(self, "exec")
  if type(cmd) ~= "string" then error("bad argument #1 to 'exec' (string expected)", 2) end
  opts = opts or {}
  for k, v in pairs(opts) do
    if not EXEC_OPTS[k] then error("exec: unknown option '" .. tostring(k) .. "'", 2) end
    if type(v) ~= EXEC_OPTS[k] then error("exec: option '" .. k .. "' must be a " .. EXEC_OPTS[k], 2) end
  end
  if opts.env then cmd = env_prefix(opts.env) .. cmd end
  local stream = (opts.on_stdout or opts.on_stderr) and true or false
  local copts = { stdin = opts.stdin, pty = opts.pty, sudo_password = opts.sudo_password,
    timeout = opts.timeout, stream = stream }
  local ropts = { on_stdout = opts.on_stdout, on_stderr = opts.on_stderr, _kept = { {}, {} } }
  for _ = 1, 4 do
    local conn, msg, code = self:_take_slot()
    if not conn then return nil, msg, code end
    local ok, op = pcall(run_exec, conn, cmd, copts, ropts)
    self:_give_slot(conn)
    if not ok then error(op, 0) end
    local r
    r, msg, code = op:result()
    if r then
      if stream then r.stdout, r.stderr = table.concat(ropts._kept[1]), table.concat(ropts._kept[2]) end
      return r
    end
    -- the server refused a session channel below our limit: it allows fewer; use what it allows
    if code ~= "ECHANNEL" or not msg:find(": exec: channel refused", 1, true) then return nil, msg, code end
    conn.limit = math.max(1, conn.active)
  end
  return nil, "ECHANNEL: " .. self._c:label() .. ": exec: no channel available", "ECHANNEL"
end

--- s:connections(): how many connections carry this session's channels (1 unless the server's
--- MaxSessions made more necessary).
function Session:connections()
  check_session(self, "connections")
  return #self._conns
end

--- s:close(): closes s, its children first, and the jump hosts it owns; safe to call twice.
function Session:close()
  check_session(self, "close")
  for i = #self._conns, 1, -1 do self._conns[i].c:close() end
  local owned = self._owned
  if owned then
    self._owned = nil
    release_owned(owned)
  end
end

---------------------------------------------------------------------------------------------------
-- Port forwarding: served by the event loop whenever it runs (any waiting call, a task, run()).

local Forward = {}
Forward.__index = Forward
M.Forward = Forward

local FWD_OPTS = { bind = "string", port = "number", to_host = "string", to_port = "number",
  on_error = "function" }

local function start_forward(self, opts, kind, method)
  local socks, remote = kind == "socks", kind == "remote"
  check_session(self, method)
  if type(opts) ~= "table" then error("bad argument #1 to '" .. method .. "' (table expected)", 3) end
  for k, v in pairs(opts) do
    if not FWD_OPTS[k] or (socks and (k == "to_host" or k == "to_port")) then
      error(method .. ": unknown option '" .. tostring(k) .. "'", 3)
    end
    if type(v) ~= FWD_OPTS[k] then error(method .. ": option '" .. k .. "' must be a " .. FWD_OPTS[k], 3) end
  end
  if not socks and (not opts.to_host or not opts.to_port) then
    error("forward: to_host and to_port are required", 3)
  end
  local op, msg, code = self._c:forward_start({ bind = opts.bind, port = opts.port, to_host = opts.to_host,
    to_port = opts.to_port, socks = socks, remote = remote })
  if not op then return nil, msg, code end
  if remote then -- wait until the server listens (or refuses)
    repeat await(op, true) until op:done() or op:listening()
    if op:done() then
      local ok, emsg, ecode = op:result()
      if not ok then return nil, emsg, ecode end
    end
  end
  local f = setmetatable({ port = op:port(), bind = opts.bind or "127.0.0.1", session = self,
    errors = 0, _op = op }, Forward)
  local on_error = opts.on_error
  -- a task per forward hands connection errors to on_error, and keeps run() going while open
  f._task = sched.spawn(function()
    repeat
      await(op, true)
      while true do
        local emsg, ecode = op:take_error()
        if not emsg then break end
        f.errors = f.errors + 1
        f.last_error = emsg
        if on_error then on_error(emsg, ecode) end
      end
    until op:done()
    -- the forward itself ended: closed (ECANCELED), or its session was lost
    local ok, emsg, ecode = op:result()
    if not ok and ecode ~= "ECANCELED" then
      f.failed, f.last_error = emsg, emsg
      if on_error then on_error(emsg, ecode) end
    end
  end)
  return f
end

--- s:forward{bind="127.0.0.1", port=0, to_host=, to_port=, on_error=fn} -> forward (f.port) | nil, msg, CODE
function Session:forward(opts) return start_forward(self, opts, "local", "forward") end

--- s:socks{bind="127.0.0.1", port=0, on_error=fn}: a SOCKS5 proxy whose connections leave from s.
function Session:socks(opts) return start_forward(self, opts or {}, "socks", "socks") end

--- s:forward_remote{bind="127.0.0.1", port=, to_host=, to_port=, on_error=fn}: the server listens
--- on bind:port and its connections are carried back to to_host:to_port from here (ssh -R).
function Session:forward_remote(opts) return start_forward(self, opts, "remote", "forward_remote") end

--- f:close(): stops accepting and closes its connections; safe twice.
function Forward:close()
  if not self._op:done() then self._op:cancel() end
end

--- f:stats() -> {active=, accepted=, errors=}
function Forward:stats()
  local active, accepted = self._op:counts()
  return { active = active, accepted = accepted, errors = self.errors }
end

function Forward:is_open() return not self._op:done() end
Forward.__close = Forward.close

function Session:state() return check_session(self, "state"):state() end
function Session:label() return check_session(self, "label"):label() end
--- s:info() -> {host_key=, auth=, banner=, connect_ms=, handshake_ms=, auth_ms=, total_ms=}
function Session:info() return check_session(self, "info"):info() end
function Session:__tostring() return tostring(self._c) end
Session.__close = Session.close

---------------------------------------------------------------------------------------------------

--- Live core objects (sessions, channels, ops) and tasks: for leak checks.
function M.stats()
  local s = core.stats()
  s.tasks = sched.ntasks()
  return s
end

M.core = core
M.sched = sched
M.tree = require("sshchain.tree")(M)
require("sshchain.transfer")(M)
return M
