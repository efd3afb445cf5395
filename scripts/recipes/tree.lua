-- tree: show the jump-host tree of an inventory and probe every hop of it.
local sshchain = require "sshchain"
local cli = require "sshchain.cli"
local retry = require "sshchain.retry"

local R = { summary = "show the jump-host tree of an inventory and probe every hop" }

local DESCRIPTION = [[
Draws the tree of jump hosts that leads to the selected hosts (every host when no TARGET is
given) and probes it: each node is connected through its parent, the way a real chain is built,
and reports whether it is reachable, how long its connect took (TCP or hop channel, key exchange,
authentication), the authentication method that worked, and its host key fingerprint. A node
whose parent cannot be reached is not probed. Siblings are probed at the same time.]]

local EPILOG = [[
Examples:
   sshlua -r tree -i /tmp/sshchain-lab/inventory.lua
   sshlua -r tree -i ~/.ssh/config 'node*' --json

Exit status:
   0  every node was reached
   1  some node was not (its line says why)
   2  bad command line or inventory]]

local function parser()
  local p = cli.parser("tree", DESCRIPTION, EPILOG)
  p:usage("Usage: sshlua -r tree [options] [TARGET...]")
  p:argument("targets", "Hosts, groups or patterns (default: all hosts)."):args("*"):argname("TARGET")
  cli.connection_options(p)
  p:flag("-j --json", "One JSON object per node, parents first.")
  p:flag("-n --no-probe", "Only draw the tree.")
  cli.retries_option(p)
  cli.shard_option(p, "hosts")
  return p
end

local function key_of(spec)
  return ("%s@%s:%s"):format(spec.user or "", spec.host, spec.port or 22)
end

--- Merges the chains into a forest: nodes {spec=, name=, children={}} keyed by their path.
local function build_forest(chains)
  local roots, index = {}, {}
  for _, chain in ipairs(chains) do
    local path, siblings = "", roots
    for _, spec in ipairs(chain) do
      path = path .. "\1" .. key_of(spec)
      local node = index[path]
      if not node then
        node = { spec = spec, name = spec.name or spec.host, children = {} }
        index[path] = node
        siblings[#siblings + 1] = node
      end
      siblings = node.children
    end
  end
  return roots
end

local function ms(v) return v and ("%.0f"):format(v) or "-" end
local function round(v) return v and math.floor(v * 10 + 0.5) / 10 end

function R.main(argv)
  local p = parser()
  local args, code = cli.parse(p, argv)
  if not args then return code end
  local hopts = { all_if_none = true }
  if args.no_probe then hopts.secrets = false end -- nothing is asked when nothing is probed
  local shard_k, shard_n = cli.shard_or_usage("tree", args, args.json)
  if shard_k == false then return cli.USAGE end
  hopts.shard = shard_k and { shard_k, shard_n }
  local policy, perr = cli.retry_policy(args)
  if perr then
    io.stderr:write(p:get_usage(), "\n\nError: ", perr, "\n")
    return cli.USAGE
  end
  local names, chains = cli.hosts("tree", args, args.targets, hopts)
  if not names then return chains end
  local roots = build_forest(chains)

  -- probe: every node through its parent's session, siblings at once
  local failed, total = 0, 0
  local progress = cli.progress(args.json and not cli.isatty(2))
  local function probe(nodes, parent)
    local results = sshchain.parallel(nodes, function(node)
      total = total + 1
      if args.no_probe then return end
      if parent == false then
        node.skipped = true
        failed = failed + 1
        probe(node.children, false)
        return
      end
      local s, msg, ecode, _, attempts = retry.run(policy, function()
        if parent then return parent:connect(node.spec) end
        return sshchain.connect(node.spec, { share = false })
      end, function(n, m, _, _, wait)
        if args.json then return end
        progress:finish()
        cli.eprintf("tree: %s: attempt %d of %d failed (%s); again in %.1f s\n", node.name, n, policy.count + 1,
          cli.clean(m), wait)
      end)
      node.session, node.attempts = s, attempts
      if s then
        node.info = s:info()
      else
        node.error, node.code = msg, ecode
        failed = failed + 1
      end
      progress:status(("tree: probed %d nodes, %d unreachable"):format(total, failed))
      probe(node.children, s or false)
    end)
    for _, r in ipairs(results) do
      if not r.ok then error(r.traceback or r.err, 0) end -- a bug, not a network failure
    end
  end
  probe(roots, nil)
  progress:finish()

  local rows, objects = {}, {}
  local function walk(nodes, prefix, depth, parent_name)
    for i, node in ipairs(nodes) do
      local last = i == #nodes
      local branch = depth == 0 and "" or (last and "└─ " or "├─ ")
      local spec = node.spec
      local where = ("%s@%s:%d"):format(spec.user or "?", spec.host, spec.port or 22)
      local info = node.info or {}
      local state = args.no_probe and "" or node.skipped and "skipped" or node.error and node.code or "ok"
      rows[#rows + 1] = { prefix .. branch .. node.name, where, state,
        node.info and (ms(info.total_ms) .. " ms") or "",
        node.info and ("%s/%s/%s"):format(ms(info.connect_ms), ms(info.handshake_ms), ms(info.auth_ms)) or "",
        info.auth or "", node.error and cli.clean(node.error) or info.host_key or "" }
      objects[#objects + 1] = cli.row({ name = node.name, host = node.name, address = spec.host,
        port = spec.port or 22, user = spec.user, seconds = info.total_ms and info.total_ms / 1000,
        depth = depth, parent = parent_name, ok = node.info ~= nil, skipped = node.skipped or nil,
        error = node.error, code = node.code, attempts = node.attempts, auth = info.auth, host_key = info.host_key,
        banner = info.banner, connect_ms = round(info.connect_ms), handshake_ms = round(info.handshake_ms),
        auth_ms = round(info.auth_ms), total_ms = round(info.total_ms) })
      walk(node.children, prefix .. (depth == 0 and "" or (last and "   " or "│  ")), depth + 1, node.name)
    end
  end
  walk(roots, "", 0, nil)
  if args.json then
    for _, o in ipairs(objects) do cli.json_line(o) end
  else
    cli.table({ "HOST", "ADDRESS", "STATE", "TIME", "TCP/KEX/AUTH ms", "AUTH", "HOST KEY / ERROR" }, rows)
  end
  io.stdout:flush()
  -- close deepest first (children before parents)
  local function close(nodes)
    for _, node in ipairs(nodes) do
      close(node.children)
      if node.session then node.session:close() end
    end
  end
  close(roots)
  if not args.no_probe then
    cli.eprintf("%d nodes: %d reached, %d not\n", total, total - failed, failed)
  end
  return failed > 0 and cli.FAILED or cli.OK
end

return R
