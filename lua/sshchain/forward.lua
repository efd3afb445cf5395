-- sshchain.forward: the Forward class. Local forwards (ssh -L), SOCKS5 proxies (ssh -D) and
-- remote forwards (ssh -R) are served by the event loop whenever it runs (any waiting call, a
-- task, sshchain.run()); connection failures go to on_error, the forward goes on.
local sched = require "sshchain.sched"
local errors = require "sshchain.errors"

local M = {}
local await = sched.await

local Forward = {}
Forward.__index = Forward
M.Forward = Forward

local PORT = { type = "number", integer = true, min = 0, max = 65535 }
local FWD_OPTS = { bind = "string", port = PORT, path = "string", to_host = "string", to_port = PORT,
  to_path = "string", on_error = "function" }
local SOCKS_OPTS = { bind = "string", port = PORT, path = "string", on_error = "function" }

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
  local op, msg, code, info = s._c:forward_start({ bind = opts.bind, port = opts.port, path = opts.path,
    to_host = opts.to_host, to_port = opts.to_port, to_path = opts.to_path, socks = socks, remote = remote })
  if not op then return nil, msg, code, info end
  if remote then -- wait until the server listens (or refuses)
    repeat await(op, true) until op:done() or op:listening()
    if op:done() then
      local ok, emsg, ecode, einfo = op:result()
      if not ok then return nil, emsg, ecode, einfo end
    end
  end
  local f = setmetatable({ port = not opts.path and op:port() or nil, path = opts.path,
    bind = not opts.path and (opts.bind or "127.0.0.1") or nil, session = s,
    errors = 0, _op = op }, Forward)
  local on_error = opts.on_error
  -- a task per forward hands connection errors to on_error, and keeps run() going while open
  f._task = sched.spawn(function()
    repeat
      await(op, true)
      while true do
        local emsg, ecode, einfo = op:take_error()
        if not emsg then break end
        f.errors = f.errors + 1
        f.last_error = emsg
        if on_error then on_error(emsg, ecode, einfo) end
      end
    until op:done()
    -- the forward itself ended: closed (ECANCELED), or its session was lost
    local ok, emsg, ecode, einfo = op:result()
    if not ok and ecode ~= "ECANCELED" then
      f.failed, f.last_error = emsg, emsg
      if on_error then on_error(emsg, ecode, einfo) end
    end
  end)
  return f
end

--- f:close(): stops accepting and closes its connections; safe twice.
function Forward:close()
  if not self._op:done() then self._op:cancel() end
end
Forward.__close = Forward.close

--- f:stats() -> {active=, accepted=, errors=}
function Forward:stats()
  local active, accepted = self._op:counts()
  return { active = active, accepted = accepted, errors = self.errors }
end

function Forward:is_open() return not self._op:done() end

return M
