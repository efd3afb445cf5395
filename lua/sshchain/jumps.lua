-- sshchain.jumps: how connections are made and shared. Handshakes are paced per server (sshd's
-- MaxStartups drops bursts of unauthenticated connections) and a dropped one is tried again;
-- jump sessions are shared by every chain that starts with the same hops; and `once` gives a
-- recipe one connect per host however many tasks ask for it at the same time.
local core = require "sshchain.core"
local log = require "sshchain.log"
local sched = require "sshchain.sched"
local specs = require "sshchain.spec"

local M = {}

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

--- Starts one core session through parent_core (nil: directly) and waits until it is ready:
--- the core session, or nil, msg, CODE, err. A handshake the server drops is tried again.
function M.open_core(spec, parent_core)
  local sem = pacer(spec)
  local attempt = 0
  while true do
    sem:acquire()
    if log.level >= 2 then
      log.say(2, parent_core and parent_core:label() or nil, "connecting to %s%s:%d%s", spec.user and spec.user .. "@" or "",
        spec.host, spec.port or 22, spec.proxy_command and (" through ProxyCommand " .. spec.proxy_command) or "")
    end
    local cspec = spec
    if spec.proxy_command then -- its tokens, each time it is started
      cspec = {}
      for k, v in pairs(spec) do cspec[k] = v end
      cspec.proxy_command = assert(specs.proxy_command(spec))
    end
    local c, op = core.session_start(cspec, parent_core)
    local ok, err = pcall(sched.await, op)
    sem:release()
    if not ok then
      c:close()
      error(err, 0)
    end
    local done, msg, code, info = op:result()
    if done then
      log.connected(c)
      return c
    end
    log.failed(c:label(), msg)
    c:close()
    local dropped = info and info.stage == "handshake" and info.reason == "dropped"
    if not dropped or attempt >= M.settings.handshake_retries then return nil, msg, code, info end
    attempt = attempt + 1
    sched.sleep(0.05 * attempt)
  end
end

---------------------------------------------------------------------------------------------------
-- Shared jump sessions: key -> { session=, refs=, pending=cond }. A chain asking for a jump that
-- another chain is connecting waits for that connect instead of making its own.

local shared = {}

--- The shared session for key, made with make() when there is none (or it is no longer ready):
--- session, or nil, msg, CODE, err. Each success is one reference, given back with release.
function M.acquire(key, make)
  local e = shared[key]
  if e and e.pending then
    while e.pending do e.pending:wait() end
    if e.err then return nil, table.unpack(e.err, 1, 3) end -- the connect we waited for failed
  end
  e = shared[key]
  if e and e.session and e.session._c:state() == "ready" then
    e.refs = e.refs + 1
    return e.session
  end
  e = { refs = 1, pending = sched.cond() }
  shared[key] = e
  local ok, s, msg, code, info = pcall(make)
  local pending = e.pending
  e.pending = nil
  if not ok or not s then
    if shared[key] == e then shared[key] = nil end
    e.err = ok and { msg, code, info } or { tostring(s), "EERROR" }
    pending:signal()
    if not ok then error(s, 0) end
    return nil, msg, code, info
  end
  s._shared, e.session = { key = key, entry = e }, s
  pending:signal()
  return s
end

--- Gives back one reference of a shared session; the last one closes it.
function M.release(s)
  local sh = s._shared
  local e = sh.entry
  e.refs = e.refs - 1
  if e.refs <= 0 then
    if shared[sh.key] == e then shared[sh.key] = nil end
    s:close()
  end
end

---------------------------------------------------------------------------------------------------
-- Connect once: what the copy and forward recipes use to reach each host one time, however many
-- of their tasks ask for it at once.

local Once = {}
Once.__index = Once

function M.once() return setmetatable({ entries = {} }, Once) end

--- The result of connect() for key, made on the first call; later and concurrent calls get the
--- same (a session, or nil, msg, CODE, err). A connect that raises counts as EERROR.
function Once:get(key, connect)
  local e = self.entries[key]
  while e and e.pending do e.pending:wait() end
  if not e then
    e = { pending = sched.cond() }
    self.entries[key] = e
    local ok, s, msg, code, info = pcall(connect)
    if ok then
      e.s, e.msg, e.code, e.info = s, msg, code, info
    else
      e.msg, e.code = tostring(s), "EERROR"
    end
    local pending = e.pending
    e.pending = nil
    pending:signal() -- always: the waiters must not wait for ever
  end
  return e.s, e.msg, e.code, e.info
end

--- Closes the session kept for key (the next get connects again).
function Once:drop(key)
  local e = self.entries[key]
  if e and e.s then e.s:close() end
  self.entries[key] = nil
end

--- Closes every session it keeps.
function Once:close_all()
  for key in pairs(self.entries) do self:drop(key) end
end

return M
