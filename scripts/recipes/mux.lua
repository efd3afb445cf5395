-- mux: hold the sessions to a jump host between runs (in the spirit of ssh's ControlMaster), so
-- that later runs open only the hops after it.
local sshchain = require "sshchain"
local cli = require "sshchain.cli"
local mux = require "sshchain.mux"

local R = { summary = "hold a jump host's sessions between runs (like ControlMaster): start, stop, status" }

local DESCRIPTION = [[
start connects to HOST through its jump hosts and leaves a process in the background that holds
those sessions and serves SOCKS5 on a Unix socket (default ~/.ssh/sshchain/mux-HASH, from the
chain's user@host:port; --control PATH for another). Its directory is made 0700 and the socket
is 0600; a client of another user is turned away. Chains whose jump host has `control = true`
(or control = PATH) in the inventory or host spec then go through the socket: a run opens only
the hops after HOST. The mux ends after --persist seconds without a client (0: when stopped),
or when HOST's session is lost; stop ends it at once; status says whether one answers.

A client finds nothing at the socket: it connects directly, silently. A socket that does not
answer (a mux that died): directly, with one line on stderr. A socket (or its directory) that is
another user's, or open to others: the connect fails with ECONNECT, naming it.

run is what start runs in the background, in the foreground (its log on stderr). A chain whose
jump host has control_persist = S as well starts one on first use: `run --specs FILE` (the hops
to hold, as a private file that run removes once read), ending after S seconds without a client.]]

local EPILOG = [[
Examples:
   sshlua -r mux start -i inventory.lua --persist 600 j2     (then, in inventory.lua: j2 = {..., control = true})
   sshlua -r exec -i inventory.lua 'node*' -- uptime       (through the held j1 and j2)
   sshlua -r mux status -i inventory.lua j2
   sshlua -r mux stop -i inventory.lua j2

Exit status:
   0  started (or already running), stopped, running (status)
   1  it could not connect, or (status) no mux answers, or (stop) none was running
   2  bad command line or inventory, or a socket that is refused]]

local function parser()
  local p = cli.parser("mux", DESCRIPTION, EPILOG)
  p:usage("Usage: sshlua -r mux start|stop|status|run [options] HOST")
  p:argument("action", "start, stop, status or run."):choices({ "start", "stop", "status", "run" })
  p:argument("host", "The jump host to hold (with the hops before it)."):argname("HOST"):args("?")
  cli.connection_options(p)
  p:option("--persist", "Seconds without a client before the mux ends (0: until stopped).", "600", tonumber)
    :argname("S")
  p:option("--control", "The socket (default ~/.ssh/sshchain/mux-HASH).", nil):argname("PATH")
  p:option("--specs", "run: the hops to hold, from a file a chain wrote on first use (removed once read).", nil)
    :argname("FILE")
  return p
end

local q = sshchain.shell_quote

local read_file = mux.read_file

local function pid_alive(pid)
  local cmdline = read_file("/proc/" .. pid .. "/cmdline")
  return cmdline ~= nil and cmdline:find("mux", 1, true) ~= nil
end

local function dirname(path) return path:match("^(.*)/[^/]*$") or "." end

--- The chain to host and the mux's socket; or nil and the exit status, said.
local function target(args)
  if args.specs then -- started on first use: the hops come in a private file, read once
    local chunk = args.action == "run" and args.control and loadfile(args.specs, "t", {})
    os.remove(args.specs)
    local ok, chain = pcall(chunk or error)
    if not chunk or not ok or type(chain) ~= "table" or #chain == 0 then
      cli.eprintf("mux: --specs needs run, --control and a file of hops a chain wrote\n")
      return nil, cli.USAGE
    end
    return chain, args.control
  end
  if not args.host then
    cli.eprintf("mux: name the jump host to hold (HOST)\n")
    return nil, cli.USAGE
  end
  -- stop and status need no secret (nothing is connected)
  local secrets = (args.action == "run" or args.action == "start") and nil or false
  local names, chains = cli.hosts("mux", args, { args.host }, { secrets = secrets })
  if not names then return nil, chains end
  if #names ~= 1 then
    cli.eprintf("mux: %s selects %d hosts: name one jump host\n", args.host, #names)
    return nil, cli.USAGE
  end
  local chain = chains[1]
  local path = args.control or mux.default_path(chain)
  if #path > 107 then
    cli.eprintf("mux: the socket path %s is longer than 107 bytes: give --control PATH\n", path)
    return nil, cli.USAGE
  end
  return chain, path
end

local function run(args, chain, path)
  local state, why = sshchain.core.mux_probe(path)
  if state == "ok" then
    cli.eprintf("mux: one already answers at %s\n", path)
    return cli.FAILED
  elseif state == "dead" then
    os.remove(path) -- a mux that died left its socket
  elseif not state and not why:find("No such file", 1, true) then
    cli.eprintf("mux: %s\n", why)
    return cli.USAGE
  end
  local pid = read_file("/proc/self/stat"):match("^(%d+)")
  local pidf = io.open(path .. ".pid", "w") -- first: start watches it
  if pidf then
    pidf:write(pid, "\n")
    pidf:close()
  end
  local s, msg = sshchain.connect(chain)
  if not s then
    os.remove(path .. ".pid")
    cli.eprintf("mux: %s\n", msg)
    return cli.FAILED
  end
  local f = s:socks { path = path, on_error = function(m) cli.eprintf("mux: %s\n", m) end }
  cli.eprintf("mux: pid %s holds %s; socket %s%s\n", pid, s:label(), path,
    args.persist > 0 and (" (ends after %g s without a client)"):format(args.persist) or "")
  local now = sshchain.core.now
  local last = now()
  local why_end
  local status = cli.OK
  while true do
    sshchain.sleep(math.min(1, args.persist > 0 and args.persist or 1))
    if not f:is_open() or s:state() ~= "ready" then
      why_end, status = "the session to " .. s:label() .. " was lost", cli.FAILED
      break
    end
    if f:stats().active > 0 then last = now() end
    if args.persist > 0 and now() - last >= args.persist then
      why_end = ("no client for %g s"):format(args.persist)
      break
    end
  end
  f:close()
  s:close()
  os.remove(path .. ".pid")
  cli.eprintf("mux: ends: %s\n", why_end)
  return status
end

local function start(args, chain, path)
  local state, why = sshchain.core.mux_probe(path)
  if state == "ok" then
    cli.eprintf("mux: already running at %s\n", path)
    return cli.OK
  elseif not state and not why:find("No such file", 1, true) then
    cli.eprintf("mux: %s\n", why)
    return cli.USAGE
  end
  local dir = dirname(path)
  if not os.execute("mkdir -p " .. q(dir) .. " && chmod 700 " .. q(dir)) then
    cli.eprintf("mux: cannot make %s\n", dir)
    return cli.FAILED
  end
  local p = io.popen("readlink /proc/$PPID/exe")
  local exe = p:read("l")
  p:close()
  local argv = { q(exe), "-r", "mux", "run", "--persist", tostring(args.persist), "--control", q(path) }
  local inv = args.inventory or os.getenv("SSHCHAIN_INVENTORY")
  if inv then argv[#argv + 1] = "--inventory " .. q(inv) end
  if args.known_hosts then argv[#argv + 1] = "--known-hosts " .. q(args.known_hosts) end
  if args.host_key then argv[#argv + 1] = "--host-key " .. args.host_key end
  if args.connect_timeout then argv[#argv + 1] = "--connect-timeout " .. tostring(args.connect_timeout) end
  argv[#argv + 1] = q(args.host)
  local log = path .. ".log"
  os.remove(path .. ".pid")
  os.execute(("setsid %s > %s 2>&1 < /dev/null &"):format(table.concat(argv, " "), q(log)))
  local t0 = sshchain.core.now()
  local deadline = t0 + (args.connect_timeout or 30) * #chain + 5
  local pid
  while sshchain.core.now() < deadline do
    pid = (read_file(path .. ".pid") or ""):match("^(%d+)") or pid
    if sshchain.core.mux_probe(path) == "ok" then
      cli.eprintf("mux: started (pid %s): %s held, socket %s\n", pid or "?", args.host, path)
      return cli.OK
    end
    if pid and not pid_alive(pid) then break end -- it ended (its log says why)
    if not pid and sshchain.core.now() - t0 > 5 then break end
    sshchain.sleep(0.05)
  end
  local text = read_file(log) or ""
  cli.eprintf("mux: did not start%s\n", text ~= "" and (": " .. text:gsub("\n$", "")) or "")
  if pid and pid_alive(pid) then os.execute("kill " .. pid) end
  return cli.FAILED
end

local function stop(_, _, path)
  local pid = (read_file(path .. ".pid") or ""):match("^(%d+)")
  if not pid or not pid_alive(pid) then
    local state = sshchain.core.mux_probe(path)
    if state == "dead" then os.remove(path) end
    cli.eprintf("mux: none is running at %s\n", path)
    return cli.FAILED
  end
  os.execute("kill " .. pid)
  for _ = 1, 50 do
    if not pid_alive(pid) then break end
    sshchain.sleep(0.1)
  end
  os.remove(path)
  os.remove(path .. ".pid")
  cli.eprintf("mux: stopped (pid %s)\n", pid)
  return cli.OK
end

local function status(_, _, path)
  local state, why = sshchain.core.mux_probe(path)
  if not state then
    cli.eprintf("mux: %s\n", why)
    return cli.USAGE
  end
  local pid = (read_file(path .. ".pid") or ""):match("^(%d+)")
  if state == "ok" then
    print(("running%s: %s"):format(pid and (" (pid " .. pid .. ")") or "", path))
    return cli.OK
  end
  print(state == "dead" and ("not answering (a mux that died left %s)"):format(path) or ("not running: " .. path))
  return cli.FAILED
end

function R.main(argv)
  local p = parser()
  local args, code = cli.parse(p, argv)
  if not args then return code end
  if args.persist < 0 then
    io.stderr:write(p:get_usage(), "\n\nError: --persist must be 0 or more\n")
    return cli.USAGE
  end
  local chain, path = target(args)
  if not chain then return path end
  local actions = { run = run, start = start, stop = stop, status = status }
  return actions[args.action](args, chain, path)
end

return R
