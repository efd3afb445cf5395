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
-- succeeded.
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
  opts = opts or {}
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
    hosts:acquire()
    local spec = specs.normalize(split(node), opts.defaults, 2)
    local s, msg, code, info
    if parent then
      s, msg, code, info = parent:connect(spec)
    else
      s, msg, code, info = connect.connect(spec)
    end
    hosts:release()
    if not s then return skip(node, msg, code, info) end
    local kids = {}
    for _, child in ipairs(node.children or {}) do kids[#kids + 1] = sched.spawn(run_node, child, s) end
    for _, c in ipairs(node.commands or {}) do
      local cmd, copts = c, nil
      if type(c) == "table" then
        cmd, copts = c[1], {}
        for k, v in pairs(c) do if k ~= 1 then copts[k] = v end end
      end
      local r, emsg, ecode, einfo = s:exec(cmd, copts)
      if r then
        report({ host = label(node), cmd = cmd, stdout = r.stdout, stderr = r.stderr,
          status = r.status, signal = r.signal, ok = r.ok })
      else
        report({ host = label(node), cmd = cmd, error = emsg, code = ecode,
          stage = einfo and einfo.stage, hop = einfo and einfo.hop, ok = false })
      end
    end
    for _, k in ipairs(kids) do k:wait() end
    s:close()
  end

  local roots = {}
  for _, n in ipairs(nodes) do roots[#roots + 1] = sched.spawn(run_node, n, nil) end
  for _, t in ipairs(roots) do t:wait() end
  return results, all_ok
end

return tree
