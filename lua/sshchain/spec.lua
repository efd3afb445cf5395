-- sshchain.spec: host specs, the one place they are parsed and checked.
--
--   { host=, port=22, user=, password=, identity=PATH|{PATH...}, passphrase=,
--     agent=true|false|SOCKET, identities_only=, certificate=PATH|{PATH...}, forward_agent=,
--     known_hosts=PATH|{PATH...}, global_known_hosts=PATH|{PATH...},
--     host_key="strict"|"accept-new"|"off", timeout=SECONDS, keepalive=SECONDS, keepalive_count=N,
--     proxy_command=CMD (%h %p %r %n %k), kex=, hostkeys=, ciphers=, macs=, pubkeys= (OpenSSH's
--     lists, +x -x ^x),
--     send_env={PATTERN...} (SendEnv: local variables sent with each command), batch=true (no
--     question is asked on the terminal: BatchMode), hash_known_hosts=true (a learned key's
--     name is hashed: HashKnownHosts),
--     control=true|SOCKET (on a jump host: chains go through its mux when one answers there,
--     see sshchain.mux), control_persist=SECONDS (with control: when none answers, one is
--     started on first use and ends after that long without a client), max_sessions=N, name= }   or a string "user@host:port"
--
-- A field of the wrong type or out of range is misuse: it raises, naming the field.
local errors = require "sshchain.errors"

local M = {}

local HOST_STRING = { type = "string" }
M.FIELDS = {
  host = HOST_STRING,
  port = { type = "number", integer = true, min = 1, max = 65535 },
  user = "string",
  password = "string",
  identity = { types = { "string", "table" } },
  passphrase = "string",
  agent = { types = { "boolean", "string" } },
  identities_only = "boolean",
  forward_agent = "boolean",
  certificate = { types = { "string", "table" } },
  proxy_command = "string",
  control = { types = { "boolean", "string" } },
  control_persist = { type = "number", min = 1, max = 1e7 },
  kex = "string",
  hostkeys = "string",
  ciphers = "string",
  macs = "string",
  pubkeys = "string",
  keepalive_count = { type = "number", integer = true, min = 1, max = 1000 },
  send_env = "table",
  batch = "boolean",
  hash_known_hosts = "boolean",
  known_hosts = { types = { "string", "table" } },
  global_known_hosts = { types = { "string", "table" } },
  host_key = { type = "string", values = { "strict", "accept-new", "off" } },
  timeout = { type = "number", min = 0.001, max = 1e7 },
  keepalive = { type = "number", min = 0, max = 1e6 },
  name = "string",
  max_sessions = { type = "number", integer = true, min = 1, max = 10000 },
}

local ALG_FIELDS = { kex = "kexalgorithms", hostkeys = "hostkeyalgorithms", ciphers = "ciphers", macs = "macs",
  pubkeys = "pubkeyacceptedalgorithms" }

local function home() return os.getenv("HOME") or "" end

--- "~/x" and "~" made absolute (the user's home).
function M.expand(path)
  if path == "~" then return home() end
  if path:sub(1, 2) == "~/" then return home() .. path:sub(2) end
  return path
end

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end
M.file_exists = file_exists

--- Splits "user@host:port" (also "host", "host:port", "[v6addr]:port", "user@[v6addr]",
--- "ssh://user@host:port[/]") into user, host, port (each may be nil; port a string of digits).
--- The user is what comes before the last @, as ssh reads it.
function M.split(str)
  str = str:gsub("^ssh://", ""):gsub("/$", "")
  local user, rest = str:match("^(.+)@([^@]+)$")
  rest = rest or str
  local host, port = rest:match("^%[(.-)%]:(%d+)$")
  if not host then host = rest:match("^%[(.-)%]$") end
  if not host then host, port = rest:match("^([^:]+):(%d+)$") end
  return user, host or rest, port
end

--- A spec table from "user@host:port".
function M.parse(str)
  local user, host, port = M.split(str)
  return { host = host, user = user, port = port and tonumber(port) or nil }
end

--- A full spec table from a string or table spec, defaults filled in; misuse raises at level.
function M.normalize(spec, defaults, level)
  level = (level or 1) + 1
  if type(spec) == "string" then spec = M.parse(spec) end
  if type(spec) ~= "table" then error("host spec must be a table or a \"user@host:port\" string", level) end
  local s = {}
  for k, v in pairs(defaults or {}) do
    if M.FIELDS[k] then s[k] = v end
  end
  for k, v in pairs(spec) do s[k] = v end
  for k, v in pairs(s) do
    local rule = M.FIELDS[k]
    if not rule then error("unknown host spec field '" .. tostring(k) .. "'", level) end
    if type(v) == "string" and v:find("\0", 1, true) then
      error(("host spec field '%s' holds a NUL byte"):format(k), level)
    end
    if not errors.satisfies(v, rule) then
      local shown = type(v) == "string" and ("%q"):format(v) or tostring(v)
      error(("host spec field '%s' must be a %s (got %s)"):format(k, errors.describe(rule), shown), level)
    end
  end
  if type(s.host) ~= "string" or s.host == "" then error("host spec needs a host", level) end
  if s.port then s.port = math.tointeger(s.port) end
  if s.max_sessions then s.max_sessions = math.tointeger(s.max_sessions) end
  local ids = s.identity
  if type(ids) == "string" then ids = { ids } end
  if ids then
    local list = {}
    for i, p in ipairs(ids) do
      if type(p) ~= "string" or p:find("\0", 1, true) then
        error(("host spec field 'identity' must list paths (item %d is %s)"):format(i,
          type(p) == "string" and "a string with a NUL byte" or "a " .. type(p)), level)
      end
      list[i] = M.expand(p)
    end
    ids = list
  elseif not s.password then
    ids = {}
    -- OpenSSH's default identities, in its order (those that exist)
    for _, f in ipairs { "id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk", "id_xmss", "id_dsa" } do
      local p = home() .. "/.ssh/" .. f
      if file_exists(p) then ids[#ids + 1] = p end
    end
  end
  s.identity = ids
  if s.keepalive_count then s.keepalive_count = math.tointeger(s.keepalive_count) end
  if type(s.agent) == "string" then
    if s.agent == "" then error("host spec field 'agent' must be a socket path, true or false", level) end
    s.agent = M.expand(s.agent)
  end
  if s.send_env then
    for i, p in ipairs(s.send_env) do
      if type(p) ~= "string" or p == "" or p:find("[=%s%z]") then
        error(("host spec field 'send_env' must list variable name patterns (item %d)"):format(i), level)
      end
    end
  end
  if s.proxy_command == "" then error("host spec field 'proxy_command' must not be empty", level) end
  if s.proxy_command then
    local _, err = M.proxy_command(s)
    if err then error("host spec field 'proxy_command': " .. err, level) end
  end
  for k, key in pairs(ALG_FIELDS) do
    if s[k] then
      local list, err = require("sshchain.config").algorithms(key, s[k], "libssh")
      if not list then error(("host spec field '%s': %s"):format(k, err), level) end
      s[k] = list
    end
  end
  for _, k in ipairs { "known_hosts", "global_known_hosts", "certificate" } do
    local v = s[k]
    if type(v) == "string" then
      s[k] = M.expand(v)
    elseif type(v) == "table" then
      local list = {}
      for i, p in ipairs(v) do
        if type(p) ~= "string" or p:find("\0", 1, true) then
          error(("host spec field '%s' must list paths (item %d)"):format(k, i), level)
        end
        list[i] = M.expand(p)
      end
      s[k] = list
    end
  end
  return s
end

--- The spec's ProxyCommand with ssh's tokens expanded (%h %p %r %n %k %%), or nil and a message
--- for an unknown token. (Expanded when the command is started, so the spec keeps it as written.)
function M.proxy_command(s)
  local t = { h = s.host, p = tostring(s.port or 22), r = s.user or require("sshchain.core").local_info().user,
    n = s.name or s.host, k = s.name or s.host }
  local bad
  local cmd = s.proxy_command:gsub("%%(.?)", function(c)
    if c == "%" then return "%" end
    if not t[c] then bad = bad or c end
    return t[c] or ""
  end)
  if bad then return nil, ("unknown token %%%s (ssh takes %%h %%p %%r %%n %%k %%%%)"):format(bad) end
  return cmd
end

--- A key that is the same for two specs that reach the same account the same way (and the
--- same parent key): jump sessions are shared by it.
function M.key(spec, parent_key)
  local keys = {}
  for k in pairs(spec) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = { parent_key or "" }
  for _, k in ipairs(keys) do
    local v = spec[k]
    if type(v) == "table" then v = table.concat(v, "\0") end
    parts[#parts + 1] = k .. "=" .. tostring(v)
  end
  return table.concat(parts, "\1")
end

return M
