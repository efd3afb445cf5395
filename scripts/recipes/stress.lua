-- stress: load a target with many concurrent SSH users through its jump hosts, with figures.
local sshchain = require "sshchain"
local cli = require "sshchain.cli"

local R = { summary = "load a target with hundreds of concurrent SSH users, with latency figures" }

local DESCRIPTION = [[
Starts --users concurrent users. Each logs into TARGET through its jump hosts (its own SSH
connection to the target; the jump hosts are shared), runs the command list --repeat times with
--interval seconds between rounds, keeps the session --hold seconds more, and logs out. When
TARGET is a group, users are spread over its hosts in turn (teams: each with its own gateway and
target, as the inventory describes them).

Closed loop (the default): each user sends its next command as soon as the last one answered.
Rate-limited (--rate R): command starts are scheduled at R per second in all; a user still
waits for its own answer before its next command, and each latency is measured from the
command's scheduled start, so time spent queueing behind a slow server shows in the figures.
New logins are paced per server under sshd's MaxStartups; --ramp spreads them over that many
seconds.

Figures: logins (connects/s, login time percentiles), commands (commands/s, latency p50, p90,
p99 and max in milliseconds), the most concurrent sessions, and failures by CODE (ESTATUS: the
command exited non-zero), each with the first host and reason that had it. A table, or one JSON
object with --json.]]

local EPILOG = [[
Examples:
   sshlua -r stress -i /tmp/sshchain-lab/inventory.lua --users 100 --repeat 5 t4 -- uptime
   sshlua -r stress -i inventory.lua --users 500 --rate 200 --json web -- 'curl -s localhost/health'
   sshlua -r stress -i inventory.lua --users 50 -c 'ls /' -c 'cat /proc/loadavg' t1

Exit status:
   0  no failure
   1  some login or command failed (figures still printed)
   2  bad command line or inventory
   130  interrupted (Ctrl-C): the figures so far are printed]]

local function parser()
  local p = cli.parser("stress", DESCRIPTION, EPILOG)
  p:usage("Usage: sshlua -r stress [options] TARGET [-- COMMAND...]")
  p:argument("target", "Host or group to load."):argname("TARGET")
  cli.connection_options(p)
  p:option("-u --users", "Concurrent users.", "100", tonumber):argname("N")
  p:option("-n --repeat", "Rounds of the command list per user.", "1", tonumber):argname("M")
  p:option("--interval", "Seconds between a user's rounds.", "0", tonumber):argname("S")
  p:option("--rate", "Command starts per second in all (rate-limited); default: closed loop.", nil,
    tonumber)
    :argname("R")
  p:option("--ramp", "Spread the logins over this many seconds.", "0", tonumber):argname("S")
  p:option("--hold", "Seconds each session stays open after its commands.", "0", tonumber):argname("S")
  p:flag("--barrier", "Start the commands once every user has logged in (or failed): all\n"
    .. "sessions open at once.")
  p:option("-t --timeout", "Seconds each command may take.", "60", tonumber):argname("S")
  p:option("-c --command", "A command of the list (repeatable); COMMAND after -- adds one more.")
    :count("*"):argname("CMD")
  p:flag("-j --json", "The figures as one JSON object.")
  p:flag("-q --quiet", "No progress line.")
  return p
end

local function ms(v) return v and math.floor(v * 1000 * 10 + 0.5) / 10 or nil end

local function pcts(list)
  table.sort(list)
  return { p50 = ms(cli.percentile(list, 50)), p90 = ms(cli.percentile(list, 90)),
    p99 = ms(cli.percentile(list, 99)), max = ms(list[#list]) }
end

function R.main(argv)
  local before, command = cli.split_command(argv)
  local p = parser()
  local args, code = cli.parse(p, before)
  if not args then return code end
  local cmds = {}
  for _, c in ipairs(args.command) do cmds[#cmds + 1] = c end
  if command and #command > 0 then cmds[#cmds + 1] = table.concat(command, " ") end
  if #cmds == 0 then
    io.stderr:write(p:get_usage(), "\n\nError: no command (give -c CMD, or COMMAND after --)\n")
    return cli.USAGE
  end
  args.users, args["repeat"] = math.tointeger(args.users), math.tointeger(args["repeat"])
  if not args.users or args.users < 1 or not args["repeat"] or args["repeat"] < 0
    or (args.rate and args.rate <= 0) then
    io.stderr:write(p:get_usage(), "\n\nError: --users must be a whole number from 1, --repeat a whole "
      .. "number from 0, --rate positive\n")
    return cli.USAGE
  end
  if args.json then cli.need("cjson", "lua-cjson") end
  local hosts, chains = cli.hosts("stress", args, { args.target })
  if not hosts then return chains end

  local now = sshchain.core.now
  local st = { logins = {}, latencies = {}, failures = {}, examples = {}, nfail = 0, connected = 0,
    login_failed = 0, commands = 0, ok = 0, live = 0, peak = 0 }
  --- Counts a failure by CODE, keeping the first host and reason for each CODE.
  local function fail(code_, host, why)
    st.failures[code_] = (st.failures[code_] or 0) + 1
    st.nfail = st.nfail + 1
    if not st.examples[code_] then st.examples[code_] = host .. ": " .. cli.clean(tostring(why)) end
  end
  local progress = cli.progress(args.quiet or (args.json and not cli.isatty(2)))
  local t0 = now()
  local last_login = t0
  local next_slot -- the open-loop schedule starts with the first command
  local gap = args.rate and 1 / args.rate
  local function show(force)
    progress:status(("stress: %d/%d logged in (%d now), %d commands, %d failures, %.1f s")
      :format(st.connected, args.users, st.live, st.commands, st.nfail, now() - t0), force)
  end

  local users = {}
  for i = 1, args.users do users[i] = i end
  local arrived, all_in = 0, sshchain.sched.cond()
  local function barrier(me)
    if me.arrived then return end
    me.arrived = true
    arrived = arrived + 1
    if arrived == args.users then all_in:signal() end
    if args.barrier then
      while arrived < args.users do all_in:wait() end
    end
  end
  local function user(u, me)
    local hi = (u - 1) % #hosts + 1
    me.host = hosts[hi]
    if args.ramp > 0 then sshchain.sleep(args.ramp * (u - 1) / args.users) end
    local l0 = now()
    local s, lmsg, ecode = sshchain.connect(chains[hi])
    if not s then
      st.login_failed = st.login_failed + 1
      fail(ecode or "EERROR", me.host, lmsg)
      show()
      barrier(me)
      return
    end
    me.session = s
    st.logins[#st.logins + 1] = now() - l0
    st.connected = st.connected + 1
    last_login = now()
    st.live = st.live + 1
    if st.live > st.peak then st.peak = st.live end
    show()
    barrier(me)
    for round = 1, args["repeat"] do
      for _, cmd in ipairs(cmds) do
        local c0 = now()
        if gap then -- rate-limited: the next start in the schedule; latency counts from it
          local at = math.max(now(), next_slot or now())
          next_slot = at + gap
          if at > now() then sshchain.sleep(at - now()) end
          c0 = at
        end
        local r, xmsg, xcode = s:exec(cmd, { timeout = args.timeout })
        st.commands = st.commands + 1
        if r and r.ok then
          st.ok = st.ok + 1
          st.latencies[#st.latencies + 1] = now() - c0
        elseif r then
          fail("ESTATUS", me.host, ("%q exited with %s"):format(cmd, r.signal and ("SIG" .. r.signal) or tostring(r.status)))
        else
          fail(xcode or "EERROR", me.host, xmsg)
        end
        show()
      end
      if args.interval > 0 and round < args["repeat"] then sshchain.sleep(args.interval) end
    end
    if args.hold > 0 then sshchain.sleep(args.hold) end
  end
  local ok_run, run_err = pcall(sshchain.parallel, users, function(u)
    local me = {}
    local ok, err_ = pcall(user, u, me)
    if me.session then
      me.session:close()
      st.live = st.live - 1
    end
    if not ok then
      if sshchain.is_interrupted(err_) then error(err_, 0) end
      fail("EERROR", me.host or "?", err_) -- a bug, counted and named rather than lost
      barrier(me)
    end
  end)
  local interrupted = not ok_run and sshchain.is_interrupted(run_err)
  if not ok_run and not interrupted then error(run_err, 0) end
  show(true)
  progress:finish()
  local duration = now() - t0
  local login_span = math.max(last_login - t0, 1e-3)
  local login = pcts(st.logins)
  local lat = pcts(st.latencies)
  local fig = {
    target = args.target, hosts = #hosts, users = args.users, ["repeat"] = args["repeat"],
    mode = gap and ("rate-limited, " .. args.rate .. " commands/s") or "closed loop",
    sessions = st.connected, sessions_failed = st.login_failed, peak_sessions = st.peak,
    connects_per_s = math.floor(st.connected / login_span * 10 + 0.5) / 10,
    login_p50 = login.p50, login_p90 = login.p90, login_p99 = login.p99, login_max = login.max,
    commands = st.commands, commands_ok = st.ok,
    commands_per_s = math.floor(st.commands / math.max(duration, 1e-3) * 10 + 0.5) / 10,
    p50 = lat.p50, p90 = lat.p90, p99 = lat.p99, max = lat.max,
    failures = st.nfail, failures_by_code = st.failures,
    duration_s = math.floor(duration * 100 + 0.5) / 100,
    failure_examples = st.examples, interrupted = interrupted or nil,
  }
  if args.json then
    if next(st.failures) == nil then fig.failures_by_code, fig.failure_examples = nil, nil end
    cli.json_line(fig)
  else
    local function v(x) return x and tostring(x) or "-" end
    local fl = {}
    for c, n in pairs(st.failures) do fl[#fl + 1] = ("%s %d (first: %s)"):format(c, n, st.examples[c]) end
    table.sort(fl)
    print(("stress: %d users on %s (%d host%s), %d round(s) of %d command(s), %s"):format(args.users,
      args.target, #hosts, #hosts == 1 and "" or "s", args["repeat"], #cmds, fig.mode))
    cli.table({ "", "COUNT", "FAILED", "PER SECOND", "P50 ms", "P90 ms", "P99 ms", "MAX ms" }, {
      { "logins", v(st.connected), v(st.login_failed), v(fig.connects_per_s), v(login.p50), v(login.p90),
        v(login.p99), v(login.max) },
      { "commands", v(st.commands), v(st.commands - st.ok), v(fig.commands_per_s), v(lat.p50), v(lat.p90),
        v(lat.p99), v(lat.max) },
    })
    print(("peak %d concurrent sessions; %.2f s in all%s; failures: %s"):format(st.peak, duration,
      interrupted and " (interrupted)" or "", #fl > 0 and table.concat(fl, "; ") or "none"))
  end
  if interrupted then return 130 end
  return st.nfail > 0 and cli.FAILED or cli.OK
end

return R
