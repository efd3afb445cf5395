-- sshchain.cli: what the bundled recipes share: command lines (lua-argparse), the inventory and
-- connection options, output as aligned tables, host-prefixed lines or JSON lines (lua-cjson), a
-- progress bar on terminals (quiet otherwise), units, percentiles, and exit statuses.
local core = require "sshchain.core"
local inventory = require "sshchain.inventory"

local M = { OK = 0, FAILED = 1, USAGE = 2 }

--- A maintained library the recipes depend on, with a clear message when it is missing.
function M.need(module, package)
  local ok, lib = pcall(require, module)
  if not ok then
    error(("this recipe needs the Lua module %q (Debian package %s)"):format(module, package), 0)
  end
  return lib
end

function M.eprintf(fmt, ...) io.stderr:write(fmt:format(...)) end

local tty_cache = {}
function M.isatty(fd)
  if tty_cache[fd] == nil then tty_cache[fd] = core.isatty(fd) end
  return tty_cache[fd]
end

---------------------------------------------------------------------------------------------------
-- Command lines

--- Splits argv at the first "--": the options and targets before it, the command words after.
function M.split_command(argv)
  local before, after = {}, nil
  for _, a in ipairs(argv) do
    if after then
      after[#after + 1] = a
    elseif a == "--" then
      after = {}
    else
      before[#before + 1] = a
    end
  end
  return before, after
end

--- A parser for recipe `name`, its help laid out like a manual page: usage, description, then
--- the arguments and options, then `epilog` (examples, exit status, environment).
function M.parser(name, description, epilog)
  local argparse = M.need("argparse", "lua-argparse")
  local p = argparse("sshlua -r " .. name, description, epilog)
  p:help_max_width(100)
  p:help_description_margin(32)
  return p
end

--- Adds the options every recipe that connects has.
function M.connection_options(p)
  p:option("-i --inventory", "Inventory: a Lua inventory file or an ssh_config file "
    .. "(default: $SSHCHAIN_INVENTORY, else ~/.ssh/config).", nil):argname("FILE")
  p:option("--known-hosts", "known_hosts file for every hop (default: each host's, else "
    .. "~/.ssh/known_hosts).", nil):argname("FILE")
  p:option("--host-key", "Host key policy for every hop: strict, accept-new or off.", nil)
    :choices({ "strict", "accept-new", "off" }):argname("MODE")
  p:option("--connect-timeout", "Seconds each hop may take to connect.", nil, tonumber):argname("S")
  p:option("--keepalive", ("Seconds between keepalive probes on every hop whose inventory entry sets none "
    .. "(ServerAliveInterval); a hop silent for %d probes is lost, and the failure names it. 0: off."):format(
    M.KEEPALIVE_COUNT), tostring(M.KEEPALIVE), tonumber):argname("S")
end

--- Keepalive in the recipes, unless the inventory or --keepalive says otherwise: a stalled link
--- fails in about KEEPALIVE * KEEPALIVE_COUNT seconds instead of TCP's minutes.
M.KEEPALIVE, M.KEEPALIVE_COUNT = 15, 3

--- Adds --retries to a parser (recipes whose work is per host).
function M.retries_option(p)
  p:option("--retries", "Tries each host again up to N times, with backoff (0.5 s doubling to 10 s, "
    .. "with jitter), when it failed in a way of the network (ECONNECT, ETIMEDOUT, ECLOSED, a channel "
    .. "refused); never after EAUTH, EHOSTKEY or a command that ran and failed.", "0", tonumber):argname("N")
end

--- The retry policy of --retries (nil: none); nil, message when the value is bad.
function M.retry_policy(args)
  local n = args.retries
  if n == nil or n == 0 then return nil end
  if math.type(n) ~= "integer" and n ~= math.floor(n) or n < 0 or n > 1000 then
    return nil, ("--retries must be a whole number from 0 to 1000 (got %s)"):format(tostring(n))
  end
  return require("sshchain.retry").policy(math.tointeger(n), "--retries")
end

--- Parses argv; returns the arguments, or nil and the exit status after printing the error.
function M.parse(p, argv)
  local ok, args = p:pparse(argv)
  if not ok then
    io.stderr:write(p:get_usage(), "\n\nError: ", args, "\n")
    return nil, M.USAGE
  end
  return args
end

local function home() return os.getenv("HOME") or "" end

--- The inventory named by the options (or the default one); nil and a message on failure.
function M.open_inventory(args)
  local path = args.inventory or os.getenv("SSHCHAIN_INVENTORY")
  if not path then
    path = home() .. "/.ssh/config"
    local f = io.open(path)
    if not f then return nil, "no inventory: give --inventory FILE (or set SSHCHAIN_INVENTORY)" end
    f:close()
  end
  return inventory.load(path)
end

--- The chain to a host with the command line's connection options applied to every hop, each
--- spec checked now (a bad field is a usage error naming the host, not a failure later).
--- opts.secrets = false: leave secrets out (nothing is asked).
function M.chain(inv, name, args, opts)
  local chain, err = inv:chain(name, opts)
  if not chain then return nil, err end
  local sshchain = require "sshchain"
  for i, spec in ipairs(chain) do
    local s = {}
    for k, v in pairs(spec) do s[k] = v end
    if args.known_hosts then s.known_hosts = args.known_hosts end
    if args.host_key then s.host_key = args.host_key end
    if args.connect_timeout then s.timeout = args.connect_timeout end
    if s.keepalive == nil and args.keepalive and args.keepalive > 0 then
      s.keepalive = args.keepalive
      if s.keepalive_count == nil then s.keepalive_count = M.KEEPALIVE_COUNT end
    end
    local ok, perr = pcall(sshchain.normalize_spec, s)
    if not ok then
      return nil, ("inventory %s: host %s: %s"):format(tostring(inv.path), s.name or s.host or "?",
        tostring(perr):gsub("^[^:]*:%d+: ", ""))
    end
    chain[i] = s
  end
  return chain
end

--- Chains for many hosts, asking for any prompted secret first (before parallel work starts).
function M.chains(inv, names, args, opts)
  local out = {}
  for i, n in ipairs(names) do
    local c, err = M.chain(inv, n, args, opts)
    if not c then return nil, err end
    out[i] = c
  end
  return out
end

--- What a recipe needs to start: the inventory, the hosts the selectors pick (every host when
--- there is none and opts.all_if_none; only part K of N of them with opts.shard = {K, N}), their
--- chains, secrets asked now, and how many were selected before the shard was taken. On a
--- problem it prints "recipe: message" and returns nil and the exit status.
function M.hosts(recipe, args, selectors, opts)
  local inv, err = M.open_inventory(args)
  if not inv then
    M.eprintf("%s: %s\n", recipe, err)
    return nil, M.USAGE
  end
  if #selectors == 0 and opts and opts.all_if_none then selectors = inv.names end
  local names, serr = inv:select(selectors)
  if not names then
    M.eprintf("%s: %s\n", recipe, serr)
    return nil, M.USAGE
  end
  local selected = #names
  if opts and opts.shard then names = M.take_shard(names, opts.shard[1], opts.shard[2]) end
  local chains, cerr = M.chains(inv, names, args, opts)
  if not chains then
    M.eprintf("%s: %s\n", recipe, cerr)
    return nil, M.USAGE
  end
  return names, chains, inv, selected
end

---------------------------------------------------------------------------------------------------
-- Shards: one part of the work, for job arrays (Kubernetes Indexed Jobs, Slurm arrays, GNU
-- parallel). The i-th item (host in selection order, or user) goes to part (i-1) mod N + 1, so
-- the N parts are disjoint and together cover everything.

--- Adds --shard to a parser; `what` names the items split ("hosts", "users").
function M.shard_option(p, what)
  p:option("--shard", ("Run part K of N of the %s (K from 1; the i-th goes to part (i-1) mod N + 1). "
    .. "Default: from JOB_COMPLETION_INDEX and SSHCHAIN_SHARDS (Kubernetes Indexed Job), or "
    .. "SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (Slurm job array); 1/1 turns that off."):format(what), nil)
    :argname("K/N")
end

local function whole(s) return s and s:match("^%s*%d+%s*$") and math.tointeger(tonumber(s)) or nil end

--- The part to run: k, n and where they came from (nil when the whole); or nil, nil, message
--- for a bad --shard or environment. getenv: os.getenv (specs pass their own).
function M.shard(args, getenv)
  getenv = getenv or os.getenv
  local function check(k, n, source)
    if not k or not n or n < 1 or k < 1 or k > n then
      return nil, nil, ("bad shard from %s: K/N needs 1 <= K <= N, e.g. --shard 2/4"):format(source)
    end
    return k, n, source
  end
  if args.shard then
    local k, n = args.shard:match("^(%d+)/(%d+)$")
    return check(whole(k), whole(n), ("--shard %q"):format(args.shard))
  end
  local idx = getenv("JOB_COMPLETION_INDEX")
  if idx and idx ~= "" then
    local count = getenv("SSHCHAIN_SHARDS")
    local source = ("JOB_COMPLETION_INDEX=%s and SSHCHAIN_SHARDS=%s"):format(idx, tostring(count))
    if not count then
      return nil, nil, "JOB_COMPLETION_INDEX is set but SSHCHAIN_SHARDS (the Job's completions) is not: "
        .. "set it, or give --shard K/N (1/1 for all)"
    end
    local i = whole(idx)
    return check(i and i + 1, whole(count), source)
  end
  local tid = getenv("SLURM_ARRAY_TASK_ID")
  if tid and tid ~= "" then
    local count, min, step = getenv("SLURM_ARRAY_TASK_COUNT"), getenv("SLURM_ARRAY_TASK_MIN") or "0",
      getenv("SLURM_ARRAY_TASK_STEP") or "1"
    local source = ("SLURM_ARRAY_TASK_ID=%s, SLURM_ARRAY_TASK_MIN=%s, SLURM_ARRAY_TASK_COUNT=%s"):format(tid, min,
      tostring(count))
    local i, lo, st = whole(tid), whole(min), whole(step)
    if not i or not lo or not st or st < 1 or (i - lo) % st ~= 0 then return check(nil, nil, source) end
    return check((i - lo) // st + 1, whole(count), source)
  end
  return nil
end

--- The items of part k of n (all when k is nil), in their order.
function M.take_shard(list, k, n)
  if not k or n == 1 then return list end
  local out = {}
  for i = k, #list, n do out[#out + 1] = list[i] end
  return out
end

--- For recipes: the shard from args and the environment, said once on stderr when it came from
--- the environment (unless quiet). Returns k, n (nil, nil: the whole) or false after printing a
--- usage error.
function M.shard_or_usage(recipe, args, quiet)
  local k, n, source = M.shard(args)
  if not k and source then
    M.eprintf("%s: %s\n", recipe, source)
    return false
  end
  if k and not args.shard and not quiet then M.eprintf("%s: shard %d/%d (from %s)\n", recipe, k, n, source) end
  return k, n
end

---------------------------------------------------------------------------------------------------
-- Output

function M.bytes(n)
  if not n then return "?" end
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local i = 1
  while n >= 1024 and i < #units do
    n = n / 1024
    i = i + 1
  end
  return i == 1 and ("%d B"):format(math.floor(n + 0.5)) or ("%.1f %s"):format(n, units[i])
end

function M.duration(s)
  if not s or s ~= s or s < 0 or s > 359999999 then return "--:--" end
  s = math.floor(s + 0.5)
  if s >= 3600 then return ("%d:%02d:%02d"):format(s // 3600, s % 3600 // 60, s % 60) end
  return ("%d:%02d"):format(s // 60, s % 60)
end

--- The p-th percentile (0..100) of a sorted list (nearest rank), or nil when it is empty.
function M.percentile(sorted, p)
  local n = #sorted
  if n == 0 then return nil end
  local rank = math.max(1, math.ceil(p / 100 * n))
  return sorted[math.min(rank, n)]
end

local function width(s) return utf8.len(s) or #s end

--- Prints rows (lists of strings) under headers, columns aligned; the last column is not padded.
function M.table(headers, rows, out)
  out = out or io.stdout
  local w = {}
  for i, h in ipairs(headers) do w[i] = width(h) end
  for _, r in ipairs(rows) do
    for i = 1, #headers do w[i] = math.max(w[i], width(tostring(r[i] or ""))) end
  end
  local function line(r)
    local parts = {}
    for i = 1, #headers do
      local c = tostring(r[i] or "")
      parts[i] = i < #headers and c .. string.rep(" ", w[i] - width(c)) or c
    end
    out:write((table.concat(parts, "  "):gsub("%s+$", "")), "\n")
  end
  line(headers)
  local rule = {}
  for i = 1, #headers do rule[i] = string.rep("-", w[i]) end
  line(rule)
  for _, r in ipairs(rows) do line(r) end
end

--- Bytes as valid UTF-8: each byte of an invalid sequence becomes U+FFFD.
function M.utf8(s)
  if utf8.len(s) then return s end
  local out, i = {}, 1
  while i <= #s do
    local ok, n = pcall(utf8.len, s, i, i)
    local c = s:byte(i)
    local len = c < 0x80 and 1 or c >= 0xF0 and 4 or c >= 0xE0 and 3 or c >= 0xC0 and 2 or 1
    if ok and n and utf8.len(s:sub(i, i + len - 1)) then
      out[#out + 1] = s:sub(i, i + len - 1)
      i = i + len
    else
      out[#out + 1] = "\u{FFFD}"
      i = i + 1
    end
  end
  return table.concat(out)
end

local function utf8_values(v)
  if type(v) == "string" then return M.utf8(v) end
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = utf8_values(x) end
  return t
end

--- One JSON object per line (strings made valid UTF-8: command output may be anything).
function M.json_line(obj, out)
  local cjson = M.need("cjson", "lua-cjson")
  ;(out or io.stdout):write(cjson.encode(utf8_values(obj)), "\n")
end

-- The keys every recipe's JSON rows have, with the same meaning (null when they do not apply):
-- host (the inventory name), address and port (the host's network address), ok, code and error
-- (the failure's CODE and message), seconds (how long the row's work took).
M.ROW_KEYS = { "host", "address", "port", "ok", "code", "error", "seconds" }

--- A recipe's JSON row: fields, with every key of M.ROW_KEYS present; spec (the host's last hop)
--- gives address and port.
function M.row(fields, spec)
  local cjson = M.need("cjson", "lua-cjson")
  if spec then
    if fields.address == nil then fields.address = spec.host end
    if fields.port == nil then fields.port = spec.port or 22 end
  end
  for _, k in ipairs(M.ROW_KEYS) do
    if fields[k] == nil then fields[k] = cjson.null end
  end
  return fields
end

--- Server text made safe to print: line ends kept (a pty's \r\n as \n), other control
--- characters replaced.
function M.clean(s) return (s:gsub("\r\n", "\n"):gsub("\r$", ""):gsub("[%z\1-\8\11-\31\127]", "?")) end

---------------------------------------------------------------------------------------------------
-- Progress on a terminal (stderr); nothing when stderr is not one, or when quiet.

local Progress = {}
Progress.__index = Progress

function M.progress(quiet)
  return setmetatable({ on = not quiet and M.isatty(2), t0 = core.now(), last = 0, shown = false }, Progress)
end

--- A status line (free text), redrawn at most 5 times a second unless forced.
function Progress:status(text, force)
  if not self.on then return end
  local now = core.now()
  if not force and now - self.last < 0.2 then return end
  self.last = now
  local cols = core.term_width(2) or 80
  if width(text) > cols - 1 then text = text:sub(1, cols - 1) end
  io.stderr:write("\r\27[K", text)
  io.stderr:flush()
  self.shown = true
end

--- A bar for bytes: done of total (nil: unknown), the rate since the start, the time left.
function Progress:bytes(done, total, label, force)
  if not self.on then return end
  local elapsed = math.max(core.now() - self.t0, 1e-3)
  local rate = done / elapsed
  local cols = core.term_width(2) or 80
  local tail
  if total and total > 0 then
    local frac = math.min(done / total, 1)
    tail = ("%3d%% %s/%s %s/s ETA %s"):format(math.floor(frac * 100), M.bytes(done), M.bytes(total),
      M.bytes(rate), M.duration(rate > 0 and (total - done) / rate or nil))
    local barw = math.max(10, math.min(30, cols - 62 - width(label or ""))) -- steady as numbers grow
    local fill = math.floor(frac * barw + 0.5)
    tail = "[" .. string.rep("#", fill) .. string.rep(".", barw - fill) .. "] " .. tail
  else
    tail = ("%s %s/s"):format(M.bytes(done), M.bytes(rate))
  end
  self:status((label and label ~= "" and (label .. " ") or "") .. tail, force)
end

--- Clears the line.
function Progress:finish()
  if self.on and self.shown then
    io.stderr:write("\r\27[K")
    io.stderr:flush()
  end
  self.shown = false
end

return M
