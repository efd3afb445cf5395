-- forward: bring the ports of many remote hosts (their web interfaces) to local ports at once.
local sshchain = require "sshchain"
local cli = require "sshchain.cli"

local R = { summary = "forward many remote host:port pairs to local ports at once (and SOCKS)" }

local DESCRIPTION = [[
Listens on a local port for each HOST:PORT and carries every connection to it through HOST's
jump hosts: the last jump host opens the connection to HOST's address and PORT, so HOST needs no
SSH server of its own (a BMC's web interface, say). With --direct the connection is opened by a
login on HOST itself, to its 127.0.0.1:PORT; so is a HOST that has no jump host in the
inventory (there is nothing in between to open it). Hosts behind the same jump hosts share one
connection to each of them. --socks adds a SOCKS5 proxy (CONNECT, no auth) whose connections
leave from --via HOST, or else from the first forward's jump host.

The table of local addresses is printed once everything listens; then the forwards are served
until Ctrl-C (or --for seconds). Each failed connection is reported on standard error and the
forward goes on.

When a session or a jump host under it is lost (a hop rebooted, a link that flapped), each of
its forwards keeps its local port, and the chain is rebuilt with backoff (0.5 s doubling to
--max-backoff) for as long as it takes (--give-up S sets a limit); clients that come meanwhile
wait --hold seconds in the port's backlog, then are refused until it is back. Each loss and
restore is said on standard error. --no-persist: a lost forward ends instead (as ssh -L).
Keepalive probes (--keepalive) find a silent link in bounded time.]]

local EPILOG = [[
Examples:
   sshlua -r forward -i /tmp/sshchain-lab/inventory.lua t1:8080 t2:8080
   sshlua -r forward -i inventory.lua 'bmc*:443' --base-port 9000
   sshlua -r forward -i ~/.ssh/config --socks 1080 --via gateway

Exit status:
   0  served until Ctrl-C or --for
   1  some forward could not be set up, or ended early (its session was lost with --no-persist,
      or could not be rebuilt within --give-up); the others were served
   2  bad command line or inventory]]

local function parser()
  local p = cli.parser("forward", DESCRIPTION, EPILOG)
  p:usage("Usage: sshlua -r forward [options] [HOST:PORT...]")
  p:argument("forwards", "Remote ports to bring here; HOST may be a group or pattern."):args("*")
    :argname("HOST:PORT")
  cli.connection_options(p)
  p:option("-b --bind", "Local address to listen on.", "127.0.0.1"):argname("ADDR")
  p:option("-p --base-port", "First local port (then +1 for each); 0: any free port.", "0", tonumber)
    :argname("N")
  p:flag("-d --direct", "Log into HOST and connect to its 127.0.0.1:PORT.")
  p:option("--socks", "Also a SOCKS5 proxy on this local port.", nil, tonumber):argname("PORT")
  p:option("--via", "The host SOCKS connections leave from.", nil):argname("HOST")
  p:option("--for", "Serve this many seconds, then stop (default: until Ctrl-C).", nil, tonumber)
    :argname("S")
  p:flag("--no-persist", "A forward whose session is lost ends (default: rebuilt, same port).")
  p:option("--hold", "Seconds new clients wait while a forward is rebuilt, before being refused.", "5", tonumber)
    :argname("S")
  p:option("--max-backoff", "Longest wait between two attempts to rebuild.", "10", tonumber):argname("S")
  p:option("--give-up", "Seconds after a loss to stop trying (default: never).", nil, tonumber):argname("S")
  p:flag("-j --json", "The table as JSON lines.")
  return p
end

local function url_for(port, local_port, bind)
  local scheme = (port == 443 or port == 8443) and "https" or "http"
  if port ~= 80 and port ~= 443 and port ~= 8080 and port ~= 8443 then scheme = "tcp" end
  local host = bind:find(":", 1, true) and ("[" .. bind .. "]") or bind
  return ("%s://%s:%d/"):format(scheme, host, local_port)
end

function R.main(argv)
  local p = parser()
  local args, code = cli.parse(p, argv)
  if not args then return code end
  if #args.forwards == 0 and not args.socks then
    io.stderr:write(p:get_usage(), "\n\nError: nothing to forward (give HOST:PORT or --socks)\n")
    return cli.USAGE
  end
  local inv, err = cli.open_inventory(args)
  if not inv then
    cli.eprintf("forward: %s\n", err)
    return cli.USAGE
  end
  -- HOST:PORT operands, with HOST a selector
  local wanted = {}
  for _, fw in ipairs(args.forwards) do
    local sel, port = fw:match("^(.+):(%d+)$")
    port = tonumber(port)
    if not sel or not port or port < 1 or port > 65535 then
      cli.eprintf("forward: %q is not HOST:PORT\n", fw)
      return cli.USAGE
    end
    local names, serr = inv:select { sel }
    if not names then
      cli.eprintf("forward: %s\n", serr)
      return cli.USAGE
    end
    for _, n in ipairs(names) do wanted[#wanted + 1] = { host = n, port = port } end
  end
  for _, w in ipairs(wanted) do
    local chain, cerr = cli.chain(inv, w.host, args)
    if not chain then
      cli.eprintf("forward: %s\n", cerr)
      return cli.USAGE
    end
    w.chain = chain
  end
  local via_chain
  if args.via then
    local cerr
    via_chain, cerr = cli.chain(inv, args.via, args)
    if not via_chain then
      cli.eprintf("forward: %s\n", cerr)
      return cli.USAGE
    end
  end

  local reconnect
  if not args.no_persist then
    reconnect = { hold = args.hold, max_backoff = args.max_backoff, backoff = math.min(0.5, args.max_backoff),
      max_wait = args.give_up }
    local ok, perr = pcall(require("sshchain.retry").reconnect_policy, reconnect, "forward")
    if not ok then
      io.stderr:write(p:get_usage(), "\n\nError: ", tostring(perr):gsub("^[^:]*:%d+: ", ""), "\n")
      return cli.USAGE
    end
  end
  local failures, sessions, forwards = 0, sshchain.jumps.once(), {}
  local function on_error(label)
    return function(msg) cli.eprintf("forward: %s: %s\n", label, cli.clean(msg)) end
  end
  local function on_event(label)
    return function(what, data)
      if what == "lost" then
        cli.eprintf("forward: %s: lost (%s); keeping the port and rebuilding\n", label, cli.clean(data.error or "?"))
      elseif what == "restored" then
        cli.eprintf("forward: %s: restored in %.2f s\n", label, data.seconds)
      elseif what == "reconnecting" and data.attempt > 1 and (data.attempt <= 3 or data.attempt % 10 == 0) then
        cli.eprintf("forward: %s: reconnecting (attempt %d)\n", label, data.attempt)
      elseif what == "given up" then
        cli.eprintf("forward: %s: given up after %d attempts\n", label, data.attempt or 0)
      end
    end
  end
  -- one session per distinct chain (the chains share their jump hosts anyway)
  local function session_for(chain)
    local key = {}
    for _, s in ipairs(chain) do key[#key + 1] = ("%s@%s:%s"):format(s.user, s.host, s.port or 22) end
    return sessions:get(table.concat(key, ","), function() return sshchain.connect(chain) end)
  end
  local results = sshchain.parallel(wanted, function(w, i)
    local chain, to_host = w.chain, "127.0.0.1"
    if not args.direct and #chain > 1 then
      to_host = chain[#chain].host
      chain = table.move(chain, 1, #chain - 1, 1, {})
    end
    local s, msg = session_for(chain)
    if not s then return nil, msg end
    local label = ("%s:%d"):format(w.host, w.port)
    local f, ferr = s:forward { bind = args.bind, port = args.base_port > 0 and args.base_port + i - 1 or 0,
      to_host = to_host, to_port = w.port, on_error = on_error(label), reconnect = reconnect,
      on_event = reconnect and on_event(label) }
    if not f then return nil, ferr end
    forwards[#forwards + 1] = f
    return { f = f, via = s:label() }
  end)
  local rows, failed_rows = {}, {}
  for i, r in ipairs(results) do
    local w = wanted[i]
    local label = ("%s:%d"):format(w.host, w.port)
    if r.ok then
      local f = r.value.f
      rows[#rows + 1] = { label, url_for(w.port, f.port, args.bind), r.value.via }
      w.local_port = f.port
    else
      failures = failures + 1
      rows[#rows + 1] = { label, "FAILED", cli.clean(r.err) }
      failed_rows[#rows] = true
    end
  end
  if args.socks then
    local chain = via_chain or (wanted[1] and (#wanted[1].chain > 1 and
      table.move(wanted[1].chain, 1, #wanted[1].chain - 1, 1, {}) or wanted[1].chain))
    if not chain then
      cli.eprintf("forward: --socks needs --via HOST (or a HOST:PORT whose jump host to use)\n")
      return cli.USAGE
    end
    local s, msg = session_for(chain)
    local f
    if s then
      f, msg = s:socks { bind = args.bind, port = args.socks, on_error = on_error("socks"), reconnect = reconnect,
        on_event = reconnect and on_event("socks") }
    end
    if f then
      forwards[#forwards + 1] = f
      local host = args.bind:find(":", 1, true) and ("[" .. args.bind .. "]") or args.bind
      rows[#rows + 1] = { "SOCKS5", ("socks5h://%s:%d"):format(host, f.port), s:label() }
    else
      failures = failures + 1
      rows[#rows + 1] = { "SOCKS5", "FAILED", cli.clean(msg) }
      failed_rows[#rows] = true
    end
  end
  if args.json then
    for i, r in ipairs(rows) do
      if failed_rows[i] then
        cli.json_line { forward = r[1], error = r[3] }
      else
        cli.json_line { forward = r[1], ["local"] = r[2], via = r[3] }
      end
    end
  else
    cli.table({ "REMOTE", "LOCAL", "THROUGH" }, rows)
  end
  io.stdout:flush()
  if #forwards == 0 then return cli.FAILED end
  cli.eprintf("forward: serving %d forward(s)%s\n", #forwards,
    args["for"] and (" for " .. args["for"] .. " s") or "; Ctrl-C stops")
  local ok, rerr = pcall(sshchain.run, args["for"])
  local served = 0
  for _, f in ipairs(forwards) do
    served = served + f:stats().accepted
    if f.failed then failures = failures + 1 end -- already reported through on_error
    f:close()
  end
  sessions:close_all()
  if not ok and not sshchain.is_interrupted(rerr) then error(rerr, 0) end
  cli.eprintf("forward: stopped; %d connection(s) served\n", served)
  return failures > 0 and cli.FAILED or cli.OK
end

return R
