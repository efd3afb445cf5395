-- sshchain.session: the Session class. Every method a session has is defined here (the long
-- ones delegate to the module that holds their policy: forward.lua, transfer.lua).
--
-- A Session is one host reached through its parents. In C a "session" is one SSH connection; a
-- Lua Session may hold several of them (`_conns`) to the same host through the same parent, when
-- the server's MaxSessions caps the channels of one: commands and transfers take a channel slot
-- on whichever connection has room.
local core = require "sshchain.core"
local sched = require "sshchain.sched"
local errors = require "sshchain.errors"
local specs = require "sshchain.spec"
local jumps = require "sshchain.jumps"
local forward = require "sshchain.forward"
local transfer = require "sshchain.transfer"
local process = require "sshchain.process"
local retry = require "sshchain.retry"
local log = require "sshchain.log"

local M = {}
local await = sched.await
local settings = jumps.settings

local Session = {}
Session.__index = Session
M.Session = Session

--- Whether v is a Session.
function M.is(v) return getmetatable(v) == Session end

--- The core session of self; raises when self is not a Session (misuse).
local function check(self, method)
  if getmetatable(self) ~= Session then
    error("bad self to '" .. method .. "' (sshchain session expected)", 3)
  end
  return self._c
end
M.check = check

--- Says what the host key check did when it did not simply pass, as ssh does.
local function host_key_notice(c, spec)
  local info = c:info()
  if not info.host_key_note then return end
  local typ, fp = (info.host_key or "? ?"):match("^(%S+) (%S+)$")
  local name = (spec.port or 22) == 22 and spec.host or ("[%s]:%d"):format(spec.host, spec.port)
  local kind = (typ or "?"):gsub("^ssh%-", ""):gsub("^ecdsa%-sha2%-nistp%d+", "ecdsa"):upper()
  local msg
  if info.host_key_note == "learned" then
    msg = ("Warning: Permanently added '%s' (%s) to the list of known hosts."):format(name, kind)
  else
    msg = ("Warning: the host key of %s was not checked (host_key = \"off\"): %s %s"):format(
      c:label(), typ or "?", fp or "?")
  end
  local warn = settings.on_warning
  if warn then warn(msg) end
end

function M.new(c, spec, parent)
  local limit = spec.max_sessions or settings.max_sessions
  return setmetatable({
    _c = c, spec = spec, parent = parent, host = spec.name or spec.host,
    _conns = { { c = c, active = 0, limit = limit } }, _slot_free = sched.cond(),
  }, Session)
end

--- Connects spec (normalized) through parent (a Session, or nil): a Session, or nil, msg, CODE,
--- err.
function M.open(spec, parent)
  local c, msg, code, info = jumps.open_core(spec, parent and parent._c)
  if not c then return nil, msg, code, info end
  host_key_notice(c, spec)
  return M.new(c, spec, parent)
end

--- s:connect(spec [, opts]): a child session reached through s (sharing s's connection).
function Session:connect(spec, opts)
  local c = check(self, "connect")
  if c:state() == "closed" then error("sshchain: session is closed", 2) end
  local revived, msg, code, info = self:_revive()
  if not revived then return nil, msg, code, info end
  local nspec = specs.normalize(spec, opts, 2)
  local child, cmsg, ccode, cinfo = M.open(nspec, self)
  if not child then return nil, cmsg, ccode, cinfo end
  child._rebuild = function(p) -- through this session, itself rebuilt first when it was lost
    local back, bmsg, bcode, binfo = self:_revive(p)
    if not back then return nil, bmsg, bcode, binfo end
    return M.open(nspec, self)
  end
  return child
end

---------------------------------------------------------------------------------------------------
-- Coming back: a session made with reconnect = ... rebuilds its chain when a later call finds it
-- lost (the calls in flight when it was lost failed with ECLOSED naming the hop).

--- Tells the session's on_event what happened to it ("lost", "reconnecting", "restored",
--- "given up"), with {attempt=, error=, code=, hop=, seconds=}.
function Session:_event(what, data)
  local on_event = self._on_event
  if on_event then on_event(what, data) end
  if log.level >= 1 then
    log.say(1, self._c:label(), "%s%s", what, data.attempt and (" (attempt %d)"):format(data.attempt) or "")
  end
end

--- Gives this session what fresh (a Session just made the same way) holds: its connections and
--- the jump hosts it owns; the lost ones are closed and given back.
function Session:_adopt(fresh)
  for i = #self._conns, 1, -1 do self._conns[i].c:close() end
  local owned = self._owned
  self._c, self._conns, self._owned, self.parent = fresh._c, fresh._conns, fresh._owned, fresh.parent
  fresh._conns, fresh._owned = {}, nil
  if owned then
    for i = #owned, 1, -1 do
      if owned[i]._shared then jumps.release(owned[i]) else owned[i]:close() end
    end
  end
  self._slot_free:signal()
end

--- When the session was lost and may come back: rebuilds its chain (through the same jump hosts,
--- shared with any other user of them) with backoff, until it is back, a failure that is not the
--- network's, p.attempts, or p.max_wait seconds from t0 (default: now). p: a reconnect policy
--- (sshchain.retry; default the session's own), notify(what, data): who hears the events
--- (default the session's on_event). true, or nil, msg, CODE, err.
function Session:_revive(p, notify, t0)
  p = p or self._reconnect
  if not p then return true end
  while self._reviving do self._reviving:wait() end
  local state, lmsg, lcode, linfo = self._c:state()
  if state == "closed" then
    return errors.fail("ECLOSED", { label = self._c:label(), hop = self._c:hop(), stage = "closed" },
      "session closed")
  end
  if state ~= "failed" then return true end
  if not self._rebuild then return nil, lmsg, lcode, linfo end
  if not notify then -- the session's own on_event (a forward being rebuilt said "lost" itself)
    notify = function(what, data) self:_event(what, data) end
    notify("lost", { error = lmsg, code = lcode, hop = linfo and linfo.hop })
  end
  self._reviving = sched.cond()
  t0 = t0 or core.now()
  local n = 0
  local ok, r, msg, code, info = pcall(function()
    while true do
      n = n + 1
      notify("reconnecting", { attempt = n })
      local fresh, fmsg, fcode, finfo = self._rebuild(p)
      if fresh then
        self:_adopt(fresh)
        notify("restored", { attempt = n, seconds = core.now() - t0 })
        return true
      end
      local left = p.max_wait and p.max_wait - (core.now() - t0)
      if not retry.retryable(fcode, finfo) or (p.attempts and n >= p.attempts) or (left and left <= 0) then
        notify("given up", { attempt = n, error = fmsg, code = fcode, hop = finfo and finfo.hop })
        return nil, fmsg, fcode, finfo
      end
      local wait = retry.delay(p, n)
      sched.sleep(left and math.min(wait, left) or wait)
    end
  end)
  local cond = self._reviving
  self._reviving = nil
  cond:signal()
  if not ok then error(r, 0) end
  return r, msg, code, info
end

---------------------------------------------------------------------------------------------------
-- Channel slots

--- Takes a channel slot: a connection of this session below its channel limit (sshd's
--- MaxSessions). When all are full, another connection to the same host through the same parent
--- is opened (up to settings.max_connections), or the caller waits for a free slot, until
--- `deadline` (core.now() seconds; nil: no limit). Returns the slot, or nil, msg, CODE, err.
function Session:_take_slot(deadline, stage)
  if self._reconnect then
    local ok, msg, code, info = self:_revive()
    if not ok then return nil, msg, code, info end
  end
  while true do
    local state, msg, code, info = self._c:state()
    if state == "closed" then error("sshchain: session is closed", 3) end
    if state ~= "ready" then return nil, msg, code, info end
    for _, conn in ipairs(self._conns) do
      if conn.active < conn.limit and conn.c:state() == "ready" then
        conn.active = conn.active + 1
        return conn
      end
    end
    if #self._conns < settings.max_connections and not self._opening then
      self._opening = true
      local ok, c, omsg, ocode, oinfo = pcall(jumps.open_core, self.spec, self.parent and self.parent._c)
      self._opening = false
      self._slot_free:signal()
      if not ok then error(c, 0) end
      if not c then return nil, omsg, ocode, oinfo end
      if self._c:state() == "closed" then c:close() else
        self._conns[#self._conns + 1] = { c = c, active = 0, limit = self._conns[1].limit }
      end
    else
      local left = deadline and deadline - core.now()
      if left and left <= 0 then
        return errors.fail("ETIMEDOUT", { label = self._c:label(), hop = self._c:hop(),
          stage = stage or "exec", reason = "timeout" }, "timed out waiting for a free channel")
      end
      self._slot_free:wait(left)
    end
  end
end

function Session:_give_slot(conn)
  conn.active = conn.active - 1
  self._slot_free:signal()
end

---------------------------------------------------------------------------------------------------
-- Commands

local DEFAULT_MAX_OUTPUT = 64 * 1024 * 1024

local EXEC_OPTS = {
  stdin = { types = { "string", "function", "userdata" }, nul = true },
  pty = { types = { "boolean", "table" } },
  sudo_password = "string",
  timeout = { type = "number", min = 0, max = 1e9 },
  env = "table",
  on_stdout = "function",
  on_stderr = "function",
  max_output = { type = "number", integer = true, min = 0 },
}

--- A task that feeds op's stdin from next_chunk() (nil at the end), waiting while the command
--- does not take it; closes stdin at the end. A source that raises (or gives what is not a
--- string) ends the command, and exec raises its error.
local function feed(op, next_chunk)
  return sched.spawn(function()
    local ok, err = pcall(function()
      while not op:done() do
        local chunk = next_chunk()
        if chunk == nil then break end
        if type(chunk) ~= "string" then error("exec: stdin gave a " .. type(chunk) .. ", not a string", 0) end
        if not process.write_queued(op, chunk) then return end
      end
      if not op:done() then op:close_stdin() end
    end)
    if not ok then
      if not op:done() then op:cancel() end
      error(err, 0)
    end
  end)
end

--- The chunks of a stdin option that is a function or a file handle (nil: it is a string).
local function stdin_source(stdin)
  if type(stdin) == "function" then return stdin end
  if io.type(stdin) == "file" then return function() return stdin:read(65536) end end
  if type(stdin) == "userdata" then error("exec: option 'stdin' must be a string, a function or a file", 4) end
end

--- Runs one command on a connection of the session; returns the op once done (or nil, msg,
--- CODE, err when output that is kept in Lua passed max_output).
local wait_exec

local function run_exec(conn, cmd, copts, opts, kept)
  local op = conn.c:exec_start(cmd, copts)
  if not opts.source then return wait_exec(op, copts, opts, kept) end
  local feeder = feed(op, opts.source)
  local ok, a, b, c, d = pcall(wait_exec, op, copts, opts, kept)
  if not ok and not op:done() then op:cancel() end
  local fok, ferr = pcall(feeder.wait, feeder)
  if not ok then error(a, 0) end
  if not fok then error(ferr, 0) end
  return a, b, c, d
end

--- Waits for a started command: the op, or nil, msg, CODE, err.
function wait_exec(op, copts, opts, kept)
  if not copts.stream then
    await(op)
    return op
  end
  local over
  local function keep(i, chunk)
    local k = kept[i]
    k.n = k.n + #chunk
    if opts.max_output > 0 and k.n > opts.max_output then
      over = i == 1 and "stdout" or "stderr"
      return
    end
    k[#k + 1] = chunk
  end
  local function deliver(o, e)
    if #o > 0 then if opts.on_stdout then opts.on_stdout(o) else keep(1, o) end end
    if #e > 0 then if opts.on_stderr then opts.on_stderr(e) else keep(2, e) end end
  end
  repeat
    await(op, true)
    deliver(op:take())
    if over then
      op:cancel()
      return errors.fail("EIO", { label = opts.label, hop = opts.hop, stage = "exec",
        reason = "limit" }, "%s passed max_output (%d bytes): stream it with on_%s", over,
        opts.max_output, over)
    end
  until op:done()
  deliver(op:take())
  return op
end

local function env_glob(name, p)
  return name:match("^" .. p:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*", ".*"):gsub("%?", ".") .. "$") ~= nil
end

--- The variables a command gets: the spec's send_env patterns (SendEnv: local variables whose
--- names match, "-PATTERN" taking some out again), then opts.env over them.
function Session:_env(env)
  local patterns = self.spec.send_env
  if not patterns then return env end
  local out = {}
  for name, value in pairs(core.environ()) do
    local take = false
    for _, p in ipairs(patterns) do
      if p:sub(1, 1) == "-" then
        if env_glob(name, p:sub(2)) then take = false end
      elseif env_glob(name, p) then
        take = true
      end
    end
    if take and name:match("^[%a_][%w_]*$") and not value:find("\0", 1, true) then out[name] = value end
  end
  for k, v in pairs(env or {}) do out[k] = v end
  return out
end

--- s:exec(cmd [, opts]) -> {stdout, stderr, status, signal, ok} | nil, msg, CODE, err.
--- The timeout covers the whole call, the wait for a channel slot included.
function Session:exec(cmd, opts)
  check(self, "exec")
  if type(cmd) ~= "string" then error("bad argument #1 to 'exec' (string expected)", 2) end
  if cmd:find("\0", 1, true) then error("bad argument #1 to 'exec' (the command holds a NUL byte)", 2) end
  opts = errors.check_options(opts, EXEC_OPTS, "exec", 2)
  local deadline = opts.timeout and opts.timeout > 0 and core.now() + opts.timeout or nil
  local stream = (opts.on_stdout or opts.on_stderr) and true or false
  local max_output = opts.max_output or DEFAULT_MAX_OUTPUT
  local source = stdin_source(opts.stdin)
  local copts = { stdin = not source and opts.stdin or nil, stdin_open = source and true or nil,
    pty = opts.pty, sudo_password = opts.sudo_password, env = self:_env(opts.env), stream = stream,
    max_output = max_output }
  local ropts = { on_stdout = opts.on_stdout, on_stderr = opts.on_stderr, max_output = max_output,
    source = source, label = self._c:label(), hop = self._c:hop() }
  for _ = 1, 4 do
    local conn, msg, code, info = self:_take_slot(deadline, "exec")
    if not conn then return nil, msg, code, info end
    if deadline then -- what is left of it (the user's figure when the slot came at once)
      local left = deadline - core.now()
      copts.timeout = opts.timeout - left < 0.005 and opts.timeout or math.max(left, 0.001)
    end
    local kept = { { n = 0 }, { n = 0 } }
    local ok, op, fmsg, fcode, finfo = pcall(run_exec, conn, cmd, copts, ropts, kept)
    self:_give_slot(conn)
    if not ok then error(op, 0) end
    if not op then return nil, fmsg, fcode, finfo end
    local r
    r, msg, code, info = op:result()
    if r then
      if stream then r.stdout, r.stderr = table.concat(kept[1]), table.concat(kept[2]) end
      return r
    end
    -- the server refused a session channel below our limit: it allows fewer; use what it allows
    if source or not (info and info.stage == "exec" and info.reason == "channel refused") then
      return nil, msg, code, info
    end
    conn.limit = math.max(1, conn.active)
  end
  return errors.fail("ECHANNEL", { label = self._c:label(), hop = self._c:hop(), stage = "exec",
    reason = "channel refused" }, "no channel available")
end

--- s:sftp() -> an SFTP client (sftp.lua) on a channel of its own, or nil, msg, CODE, err.
function Session:sftp()
  check(self, "sftp")
  return require("sshchain.sftp").open(self)
end

--- s:spawn(cmd | nil [, {pty=true|{term=, cols=, rows=}, env=}]) -> an interactive Process
--- (process.lua): write, read, expect, wait, close. cmd nil: the login shell.
function Session:spawn(cmd, opts)
  check(self, "spawn")
  if self.spec.send_env and (opts == nil or type(opts) == "table") then
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    o.env = self:_env(o.env)
    opts = o
  end
  return process.spawn(self, cmd, opts)
end

---------------------------------------------------------------------------------------------------
-- The rest

--- s:connections(): how many connections carry this session's channels (1 unless the server's
--- MaxSessions made more necessary).
function Session:connections()
  check(self, "connections")
  return #self._conns
end

--- s:close(): closes s, its children first, and the jump hosts it owns; safe to call twice.
function Session:close()
  check(self, "close")
  self._reconnect = nil -- closed on purpose: it does not come back
  for i = #self._conns, 1, -1 do self._conns[i].c:close() end
  local owned = self._owned
  if owned then
    self._owned = nil
    for i = #owned, 1, -1 do
      if owned[i]._shared then jumps.release(owned[i]) else owned[i]:close() end
    end
  end
end
Session.__close = Session.close

--- Forwards (forward.lua): s:forward{...} (ssh -L), s:socks{...} (ssh -D),
--- s:forward_remote{...} (ssh -R).
function Session:forward(opts)
  check(self, "forward")
  return forward.start(self, opts, "local", "forward")
end

function Session:socks(opts)
  check(self, "socks")
  return forward.start(self, opts or {}, "socks", "socks")
end

function Session:forward_remote(opts)
  check(self, "forward_remote")
  return forward.start(self, opts, "remote", "forward_remote")
end

--- Transfers (transfer.lua): s:upload(local, remote [, opts]), s:download(remote, local [, opts]).
function Session:upload(lpath, rpath, opts)
  check(self, "upload")
  return transfer.upload(self, lpath, rpath, opts, 2)
end

function Session:download(rpath, lpath, opts)
  check(self, "download")
  return transfer.download(self, rpath, lpath, opts, 2)
end

--- s:state() -> "connecting" | "ready" | "closed", or "failed", msg, CODE, err
function Session:state() return check(self, "state"):state() end
--- s:label() -> "hop 3 user@host:port"
function Session:label() return check(self, "label"):label() end
--- s:info() -> {host_key=, auth=, banner=, connect_ms=, handshake_ms=, auth_ms=, total_ms=}
function Session:info() return check(self, "info"):info() end
function Session:__tostring() return tostring(self._c) end

return M
