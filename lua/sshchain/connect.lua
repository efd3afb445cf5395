-- sshchain.connect: sshchain.connect(hops [, opts]) — a chain of host specs (or an ssh_config
-- Host name) turned into a session to the last one, each hop reached through the one before.
-- Jump hosts are shared: chains that start with the same hops ride on the same sessions.
local config = require "sshchain.config"
local core = require "sshchain.core"
local errors = require "sshchain.errors"
local specs = require "sshchain.spec"
local jumps = require "sshchain.jumps"
local mux = require "sshchain.mux"
local session = require "sshchain.session"
local retry = require "sshchain.retry"

local M = {}

local passphrases = {} -- key file -> the passphrase typed for it (asked once per process)

-- An encrypted key that ssh_config names asks for its passphrase on the terminal, once per key,
-- as ssh does (not with BatchMode, nor without a terminal: then auth fails with EAUTH saying so).
local function ask_passphrases(spec, opts)
  if opts.passphrase or spec.passphrase or spec.batch or type(spec.identity) ~= "table" then return end
  for _, path in ipairs(spec.identity) do
    if passphrases[path] == nil and core.key_needs_passphrase(path) and core.isatty(0) then
      local answer = require("sshchain.inventory").ask(("Enter passphrase for key '%s'"):format(path))
      passphrases[path] = answer or false
    end
    if passphrases[path] then
      spec.passphrase = passphrases[path]
      return
    end
  end
end

--- The list of normalized specs hops stands for: nil, msg when an ssh_config cannot be read.
--- A name (no "@") goes through ssh_config as with ssh: opts.config alone (ssh -F), else
--- ~/.ssh/config then /etc/ssh/ssh_config; "user@host[:port]" is a spec, unless opts.config.
function M.resolve(hops, opts, level)
  if type(hops) == "table" and hops[1] == nil and next(hops) ~= nil then hops = { hops } end
  if type(hops) == "string" then
    if opts.config or not hops:find("@") then
      local list, err = config.resolve(hops, { config = opts.config })
      if not list then return nil, err end
      for _, spec in ipairs(list) do ask_passphrases(spec, opts) end
      hops = list
    else
      hops = { hops }
    end
  end
  if type(hops) ~= "table" or hops[1] == nil then
    error("bad argument #1 to 'connect' (host spec, list of specs or ssh_config name expected)", level)
  end
  local list = {}
  for i, h in ipairs(hops) do list[i] = specs.normalize(h, opts, level) end
  return list
end

local CONNECT_OPTS = { config = "string", share = "boolean", reconnect = { types = { "boolean", "table" } },
  on_event = "function" }
for k, rule in pairs(specs.FIELDS) do CONNECT_OPTS[k] = rule end

local function release_owned(owned)
  for i = #owned, 1, -1 do
    if owned[i]._shared then jumps.release(owned[i]) else owned[i]:close() end
  end
end

--- The chain of normalized specs made into sessions, each through the one before: the last,
--- owning the others; or nil, msg, CODE, err. share = false: private jump sessions.
local function build(list, share)
  local routed, why, at = mux.route(list)
  if not routed then
    return errors.fail("ECONNECT", { label = list[at].name or list[at].host, stage = "connect", reason = "mux", hop = at },
      "mux socket %s", why)
  end
  list = routed
  local chain, parent = {}, nil
  for i, spec in ipairs(list) do
    local s, msg, code, info
    if i < #list and share ~= false then
      local key = specs.key(spec, parent and parent._key)
      local p = parent
      s, msg, code, info = jumps.acquire(key, function() return session.open(spec, p) end)
      if s then s._key = key end
    else
      s, msg, code, info = session.open(spec, parent)
    end
    if not s then
      release_owned(chain)
      return nil, msg, code, info
    end
    chain[#chain + 1] = s
    parent = s
  end
  local target = table.remove(chain)
  target._owned = chain
  return target
end

--- A session lost while this long is tried again for a minute by default.
M.RECONNECT_MAX_WAIT = 60

--- connect(hops [, opts]): a session to the last hop, reached through the others in order;
--- or nil, msg, CODE, err. opts.config: ssh_config path (hops may then be a Host name);
--- opts.share = false: private jump sessions; opts.reconnect = true | {max_wait=, backoff=,
--- max_backoff=, attempts=}: a later call on the session, once it was lost, rebuilds the chain
--- (opts.on_event(what, data) hears "lost", "reconnecting", "restored", "given up"); other
--- fields: defaults for every hop.
function M.connect(hops, opts)
  if opts ~= nil and type(opts) ~= "table" then error("bad argument #2 to 'connect' (table expected)", 2) end
  opts = errors.check_options(opts, CONNECT_OPTS, "connect", 2)
  local policy = retry.reconnect_policy(opts.reconnect, "connect", { max_wait = M.RECONNECT_MAX_WAIT }, 2)
  local list, err = M.resolve(hops, opts, 3)
  if not list then return errors.fail("EIO", { stage = "config" }, "%s", err) end
  local target, msg, code, info = build(list, opts.share)
  if not target then return nil, msg, code, info end
  target._reconnect, target._on_event = policy, opts.on_event
  target._rebuild = function() return build(list, opts.share) end -- for reconnecting forwards too
  return target
end

return M
