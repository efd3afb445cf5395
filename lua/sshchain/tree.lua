-- sshchain.tree: a tree of hosts described as data, the way the original tool's users wrote one:
--
--   sshchain.tree({
--     host = "10.0.0.1", user = "ops", password = "...",          -- a host spec ...
--     name = "gateway",                                           -- ... a label (default: host)
--     commands = { "uptime", { "ipmitool sdr", timeout = 30 } }, -- run in order on this host
--     children = { { host = "10.1.0.5", ..., commands = {...} }, ... },  -- reached through it
--   }, function(r) print(r.host, r.cmd, r.status, r.stdout) end, { limit = 32 })
--
-- Hosts run in parallel (children connect while their parent's commands run); commands run in
-- order within a host. handler(r) gets {host=, cmd=, stdout=, stderr=, status=, ok=} per command,
-- or {host=, cmd=nil, error=, code=} when a host cannot be reached (its subtree is skipped, each
-- host reported once with the parent's failure). Returns the list of results and whether all
-- succeeded. opts: limit (hosts connecting at once, 64), defaults (spec fields for every host),
-- retries (sshchain.retry's policy: a host's connect, and a command cut by the network, are
-- tried again with backoff; never after EAUTH or EHOSTKEY, nor a command that ran and failed).
local retry = require "sshchain.retry"
local errors = require "sshchain.errors"
local sched = require "sshchain.sched"
local specs = require "sshchain.spec"
local connect = require "sshchain.connect"

local NODE_KEYS = { commands = true, children = true }

local function split(node)
  local spec = {}
  for k, v in pairs(node) do
    if not NODE_KEYS[k] then spec[k] = v end
  end
  return spec
end

local function label(node) return node.name or node.host end

local function tree(nodes, handler, opts)
  if type(nodes) ~= "table" then error("bad argument #1 to 'tree' (table expected)", 2) end
  if handler ~= nil and type(handler) ~= "function" then
    error("bad argument #2 to 'tree' (function expected)", 2)
  end
  opts = errors.check_options(opts, { limit = { type = "number", integer = true, min = 1 }, defaults = "table",
    retries = "any" }, "tree", 2)
  local policy = retry.policy(opts.retries, "tree", 2)
  if nodes[1] == nil then nodes = { nodes } end
  local results, all_ok = {}, true
  local hosts = sched.semaphore(opts.limit or 64)

  local function report(r)
    results[#results + 1] = r
    if not r.ok then all_ok = false end
    if handler then handler(r) end
  end

  local function skip(node, msg, code, info)
    report({ host = label(node), error = msg, code = code, stage = info and info.stage,
      hop = info and info.hop, ok = false })
    for _, child in ipairs(node.children or {}) do skip(child, msg, code, info) end
  end

  local run_node
  run_node = function(node, parent)
    local spec = specs.normalize(split(node), opts.defaults, 2)
    local function open()
      hosts:acquire()
      local ok, s, msg, code, info = pcall(function()
        if parent then return parent.s:connect(spec) end
        return connect.connect(spec)
      end)
      hosts:release()
      if not ok then error(s, 0) end
      return s, msg, code, info
    end
    local s, msg, code, info = retry.run(policy, open)
    if not s then return skip(node, msg, code, info) end
    local me = { s = s } -- the children connect through whichever session is current
    local kids = {}
    for _, child in ipairs(node.children or {}) do kids[#kids + 1] = sched.spawn(run_node, child, me) end
    for _, c in ipairs(node.commands or {}) do
      local cmd, copts = c, nil
      if type(c) == "table" then
        cmd, copts = c[1], {}
        for k, v in pairs(c) do if k ~= 1 then copts[k] = v end end
      end
      local r, emsg, ecode, einfo = retry.run(policy, function(attempt)
        if attempt > 1 and me.s:state() ~= "ready" then -- cut by the network: a new session
          local fresh, fmsg, fcode, finfo = retry.run(policy, open)
          if not fresh then return nil, fmsg, fcode, finfo end
          me.s:close()
          me.s = fresh
        end
        return me.s:exec(cmd, copts)
      end)
      if r then
        report({ host = label(node), cmd = cmd, stdout = r.stdout, stderr = r.stderr,
          status = r.status, signal = r.signal, ok = r.ok })
      else
        report({ host = label(node), cmd = cmd, error = emsg, code = ecode,
          stage = einfo and einfo.stage, hop = einfo and einfo.hop, ok = false })
      end
    end
    for _, k in ipairs(kids) do k:wait() end
    me.s:close()
  end

  local roots = {}
  for _, n in ipairs(nodes) do roots[#roots + 1] = sched.spawn(run_node, n, nil) end
  for _, t in ipairs(roots) do t:wait() end
  return results, all_ok
end

return tree
