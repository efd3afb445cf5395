-- sshchain.log: what happens, for people: per hop, each stage of a connect with its time, the
-- algorithms chosen, the auth methods the server offered and those tried, the ssh_config lines
-- that applied, failures; at level 3 also libssh's own log. Secrets never appear (messages are
-- made of stages, names, algorithms and times only).
--
--   sshchain.log{level = 0..3, handler = function(level, hop_label, message) end}
--   SSHCHAIN_DEBUG=1..3 in the environment; sshlua -v, -vv, -vvv.
local core = require "sshchain.core"

local M = {}

M.level = math.tointeger(tonumber(os.getenv("SSHCHAIN_DEBUG") or "") or 0) or 0

--- The default handler: "sshchain: [hop label] message" on stderr.
function M.default_handler(_, hop, message)
  io.stderr:write(("sshchain: %s%s\n"):format(hop and hop ~= "" and ("[" .. hop .. "] ") or "", message))
end

M.handler = M.default_handler

local function apply_libssh()
  core.libssh_log(M.level >= 3 and 2 or 0)
end

--- sshchain.log{level=, handler=}: sets what is said and to whom; returns the level before.
function M.configure(opts)
  if type(opts) ~= "table" then error("bad argument #1 to 'log' (table expected)", 2) end
  local before = M.level
  if opts.level ~= nil then
    local n = math.tointeger(opts.level)
    if not n or n < 0 or n > 3 then error("log: level must be an integer from 0 to 3", 2) end
    M.level = n
  end
  if opts.handler ~= nil then
    if type(opts.handler) ~= "function" then error("log: handler must be a function", 2) end
    M.handler = opts.handler
  end
  apply_libssh()
  return before
end

--- Says message (string.format of fmt, ...) at level for hop (a label, or nil).
function M.say(level, hop, fmt, ...)
  if level > M.level then return end
  local ok, msg = pcall(string.format, fmt, ...)
  M.handler(level, hop, ok and msg or fmt)
end

--- Hands what libssh logged to the handler (level 3 only).
function M.drain()
  if M.level < 3 then return end
  for _, line in ipairs(core.libssh_log_drain()) do M.handler(3, "libssh", line) end
end

local function ms(x) return x and ("%.0f ms"):format(x) or "-" end

--- What a connect learned (c: a core session), said at levels 1 and 2.
function M.connected(c)
  if M.level < 1 then return end
  local i = c:info()
  local label = c:label()
  M.say(1, label, "ready in %s (tcp %s, handshake %s, auth %s), authenticated by %s", ms(i.total_ms),
    ms(i.connect_ms), ms(i.handshake_ms), ms(i.auth_ms), tostring(i.auth))
  M.say(2, label, "server %s; kex %s, cipher %s, mac %s; host key %s%s", tostring(i.banner), tostring(i.kex),
    tostring(i.cipher), tostring(i.mac), tostring(i.host_key), i.host_key_note and (" (" .. i.host_key_note .. ")") or "")
  M.say(2, label, "auth: the server offered %s; tried %s", tostring(i.auth_offered), tostring(i.auth_tried))
  M.drain()
end

--- A connect that failed.
function M.failed(label, msg)
  if M.level < 1 then return end
  M.say(1, label, "failed: %s", tostring(msg))
  M.drain()
end

apply_libssh()

return M
