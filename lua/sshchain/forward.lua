-- sshchain.forward: the Forward class. Local forwards (ssh -L), SOCKS5 proxies (ssh -D) and
-- remote forwards (ssh -R) are served by the event loop whenever it runs (any waiting call, a
-- task, sshchain.run()); connection failures go to on_error, the forward goes on.
--
-- With reconnect = true | {max_wait=, backoff=, max_backoff=, attempts=, hold=}, a forward
-- outlives its session: when the session or a hop under it is lost, the local socket stays bound
-- (new clients wait in its backlog, and after `hold` seconds are refused cleanly), the chain is
-- rebuilt with backoff through the same jump hosts, and the forward serves again on the same
-- port (a remote one is asked for again). on_event(what, data) hears "lost", "reconnecting"
-- (data.attempt), "restored" (data.seconds: from the loss) and "given up".
local core = require "sshchain.core"
local sched = require "sshchain.sched"
local errors = require "sshchain.errors"
local retry = require "sshchain.retry"

local M = {}
local await = sched.await

local Forward = {}
Forward.__index = Forward
M.Forward = Forward

local PORT = { type = "number", integer = true, min = 0, max = 65535 }
local RECONNECT = { types = { "boolean", "table" } }
local FWD_OPTS = { bind = "string", port = PORT, path = "string", to_host = "string", to_port = PORT,
  to_path = "string", on_error = "function", reconnect = RECONNECT, on_event = "function" }
local SOCKS_OPTS = { bind = "string", port = PORT, path = "string", on_error = "function", reconnect = RECONNECT,
  on_event = "function" }

--- New clients of a forward being rebuilt wait this long in its backlog, then are refused.
M.HOLD = 5

--- Starts a forward of `kind` ("local", "socks", "remote") on session s: a Forward, or nil, msg,
--- CODE, err. method names the public call in misuse errors.
function M.start(s, opts, kind, method)
  local socks, remote = kind == "socks", kind == "remote"
  if type(opts) ~= "table" then error("bad argument #1 to '" .. method .. "' (table expected)", 3) end
  errors.check_options(opts, socks and SOCKS_OPTS or FWD_OPTS, method, 3)
  if not socks then
    if opts.to_path and (opts.to_host or opts.to_port) then
      error(method .. ": to_path, or to_host and to_port, not both", 3)
    elseif not opts.to_path and (not opts.to_host or not opts.to_port) then
      error(method .. ": to_host and to_port (or to_path) are required", 3)
    end
  end
  for _, k in ipairs { "path", "to_path" } do -- a Unix socket's name: 107 bytes at most
    local v = opts[k]
    if v and (v == "" or #v > 107 or v:find("\0", 1, true)) then
      error(("%s: option '%s' must be a socket path of 1 to 107 bytes"):format(method, k), 3)
    end
  end
  if opts.path then
    if opts.port or opts.bind then error(method .. ": path, or bind and port, not both", 3) end
    if remote then -- streamlocal-forward@openssh.com: libssh 0.10 has no call to ask for it
      error(method .. ": a remote Unix socket (path) is not supported yet; to_path is", 3)
    end
  end
  local policy = retry.reconnect_policy(opts.reconnect, method, { hold = M.HOLD }, 3)
  local revived, rmsg, rcode, rinfo = s:_revive()
  if not revived then return nil, rmsg, rcode, rinfo end
  local listener
  if policy and not remote then -- the socket outlives each forward served on it
    local lmsg, lcode, linfo
    listener, lmsg, lcode, linfo = core.listen({ bind = opts.bind, port = opts.port, path = opts.path })
    if not listener then return nil, lmsg, lcode, linfo end
  end
  local want = { bind = opts.bind, port = opts.port, path = opts.path, to_host = opts.to_host,
    to_port = opts.to_port, to_path = opts.to_path, socks = socks, remote = remote, listener = listener }
  if listener then want.bind, want.port, want.path = nil, nil, nil end
  local function start()
    local op, msg, code, info = s._c:forward_start(want)
    if not op then return nil, msg, code, info end
    if remote then -- wait until the server listens (or refuses)
      repeat await(op, true) until op:done() or op:listening()
      if op:done() then
        local ok, emsg, ecode, einfo = op:result()
        if not ok then return nil, emsg, ecode, einfo end
      end
    end
    return op
  end
  local op, msg, code, info = start()
  if not op then
    if listener then listener:cancel() end
    return nil, msg, code, info
  end
  if remote and want.port == 0 then want.port = op:port() end -- asked for again: the same port
  local f = setmetatable({ port = not opts.path and op:port() or nil, path = opts.path,
    bind = not opts.path and (opts.bind or "127.0.0.1") or nil, session = s,
    errors = 0, _op = op, _listener = listener, _accepted = 0, restores = 0 }, Forward)
  local on_error, on_event = opts.on_error, opts.on_event
  local function event(what, data)
    if on_event then on_event(what, data) end
  end
  --- Serves op until it ends; the end's failure (nil when closed on purpose).
  local function serve()
    repeat
      await(f._op, true)
      while true do
        local emsg, ecode, einfo = f._op:take_error()
        if not emsg then break end
        f.errors = f.errors + 1
        f.last_error = emsg
        if on_error then on_error(emsg, ecode, einfo) end
      end
    until f._op:done()
    local ok, emsg, ecode, einfo = f._op:result()
    if ok or ecode == "ECANCELED" then return nil end
    return emsg, ecode, einfo
  end
  --- After a loss: the session rebuilt and the forward started again (true), or nil, msg, CODE, err.
  local function restore(t0)
    local settled = sched.cond()
    if listener then
      sched.spawn(function() -- new clients wait at most `hold` seconds, then are refused cleanly
        if not settled:wait(policy.hold) and not f._closed then listener:refuse(true) end
      end)
    end
    local result = table.pack(pcall(function()
      while true do
        local back, bmsg, bcode, binfo = s:_revive(policy, event, t0)
        if not back or f._closed then return back, bmsg, bcode, binfo end
        local nop, nmsg, ncode, ninfo = start()
        if nop then
          f._accepted = f._accepted + select(2, f._op:counts())
          f._op = nop
          return true
        end
        if not retry.retryable(ncode, ninfo) then return nil, nmsg, ncode, ninfo end
        sched.sleep(retry.delay(policy, 1)) -- lost again at once: the session will say so
      end
    end))
    settled:signal()
    if listener then listener:refuse(false) end
    if not result[1] then error(result[2], 0) end
    return table.unpack(result, 2, 5)
  end
  -- a task per forward hands connection errors to on_error, keeps run() going while open, and
  -- (reconnect) rebuilds what was lost
  f._task = sched.spawn(function()
    while true do
      local emsg, ecode, einfo = serve()
      if not emsg then break end
      if not policy or f._closed then
        f.failed, f.last_error = emsg, emsg
        if on_error then on_error(emsg, ecode, einfo) end
        break
      end
      local t0 = core.now()
      f.lost, f.last_error = emsg, emsg
      event("lost", { error = emsg, code = ecode, hop = einfo and einfo.hop })
      local back, bmsg, bcode, binfo = restore(t0)
      f.lost = nil
      if f._closed then break end
      if not back then
        f.failed, f.last_error = bmsg, bmsg
        event("given up", { error = bmsg, code = bcode, hop = binfo and binfo.hop })
        if on_error then on_error(bmsg, bcode, binfo) end
        break
      end
      f.restores = f.restores + 1
      f.restored_in = core.now() - t0
      event("restored", { seconds = f.restored_in, attempt = f.restores })
    end
    if listener then listener:cancel() end
  end)
  return f
end

--- f:close(): stops accepting and closes its connections; safe twice.
function Forward:close()
  self._closed = true
  if not self._op:done() then self._op:cancel() end
  if self._listener and not self._listener:done() then self._listener:cancel() end
end
Forward.__close = Forward.close

--- f:stats() -> {active=, accepted=, errors=}
function Forward:stats()
  local active, accepted = self._op:counts()
  return { active = active, accepted = self._accepted + accepted, errors = self.errors, restores = self.restores,
    refused = self._listener and self._listener:refused() or 0 }
end

--- Whether it serves (a reconnecting forward being rebuilt counts as open: its port is kept).
function Forward:is_open()
  if self._listener then return not self._closed and not self.failed end
  return not self._op:done()
end

return M
