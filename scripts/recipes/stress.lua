-- stress: load a target with many concurrent SSH users through its jump hosts, with figures,
-- thresholds to gate on, figures per interval, every sample on disk and an HTML report.
local sshchain = require "sshchain"
local cli = require "sshchain.cli"
local loadstats = require "sshchain.loadstats"

local R = { summary = "load a target with hundreds of concurrent SSH users, with latency figures" }


local DESCRIPTION = [[
Starts --users concurrent users. Each logs into TARGET through its jump hosts (its own SSH
connection to the target; the jump hosts are shared) and runs the command list. When TARGET is
a group, users are spread over its hosts in turn (user i on host (i-1) mod HOSTS + 1).

By count (the default): each user runs the list --repeat times with --interval seconds between
rounds, keeps the session --hold seconds more, and logs out; --ramp spreads the logins.

By time (--duration, or --stages): users loop over the list until the time is up. --ramp brings
them in over its first seconds and --ramp-down takes them out over its last; --stages gives the
number of users as a profile instead (k6's stages: "30s:50,2m:200,30s:0" goes from 0 to 50 users
in 30 s, to 200 over 2 minutes, then down to 0 in 30 s). A user logs out when the profile drops
below it and comes back when it rises again; a user whose login fails, or whose session is lost,
tries again a second later. When the time is up no command starts; those under way get --grace
seconds, then are cut off and counted apart (not as failures).

Closed loop (the default): each user sends its next command as soon as the last one answered.
Rate-limited (--rate R): command starts are scheduled at R per second in all; a user still
waits for its own answer before its next command, and each latency is measured from the
command's scheduled start, so time spent queueing behind a slow server shows in the figures.
New logins are paced per server under sshd's MaxStartups.

Figures: logins (logins/s, login time percentiles), commands (commands/s, latency p50, p90, p99
and max in milliseconds), the most concurrent sessions, and failures by CODE (ESTATUS: the
command exited non-zero), each with the first host and reason that had it. A table, or one JSON
object with --json (its keys are the same in every run; README lists them).

--threshold METRIC<VALUE (repeatable; < <= > >= == !=): p99<500, p90<200, logins_p99<3000,
failures<1% (of logins and commands), failures==0, commands_per_s>100, peak_sessions>=100: any
numeric figure, its unit suffix optional. A failed threshold is named and the exit status is 99.

--every S prints the figures of each S-second interval while the run goes on (on standard error,
or as JSON lines with --json before the final object). --out FILE streams every sample to FILE as
JSON lines (the run, then a line per login, command and logout: time, user, host, kind,
latency_ms, code, error; then the end); sshlua -r merge and sshlua -r report read it back.
--report FILE.html writes one self-contained HTML file with charts over time.]]

local EPILOG = [[
Examples:
   sshlua -r stress -i /tmp/sshchain-lab/inventory.lua --users 100 --repeat 5 t4 -- uptime
   sshlua -r stress -i inventory.lua --users 200 --duration 5m --ramp 30s --ramp-down 30s \
       --threshold 'p99<500' --threshold 'failures<1%' --every 10 --report load.html web -- true
   sshlua -r stress -i inventory.lua --stages 30s:50,2m:200,30s:0 --out samples.jsonl t4 -- uptime
   sshlua -r stress -i inventory.lua --users 500 --rate 200 --json web -- 'curl -s localhost/health'

Exit status:
   0  no failure (with thresholds: every threshold passed)
   1  some login or command failed, and no threshold was given on failures
   2  bad command line or inventory
   99  some threshold failed (each is named)
   130  interrupted (Ctrl-C): the figures so far are printed]]

local function parser()
  local p = cli.parser("stress", DESCRIPTION, EPILOG)
  p:usage("Usage: sshlua -r stress [options] TARGET [-- COMMAND...]")
  p:argument("target", "Host or group to load."):argname("TARGET")
  cli.connection_options(p)
  p:option("-u --users", "Concurrent users (default 100).", nil, tonumber):argname("N")
  p:option("-n --repeat", "Rounds of the command list per user (default 1; not with --duration).", nil,
    tonumber):argname("M")
  p:option("-d --duration", "Run for this long (90, 90s, 5m, 1h): users loop over the command list.")
    :argname("TIME")
  p:option("--stages", "A profile of users over time, DURATION:USERS,... (instead of --users and "
    .. "--duration).")
    :argname("LIST")
  p:option("--ramp", "Bring the users in over this long (default 0).", "0"):argname("TIME")
  p:option("--ramp-down", "With --duration: take them out over the last TIME of it.", "0"):argname("TIME")
  p:option("--grace", "Seconds commands under way at the end of a timed run may still take.", "10", tonumber)
    :argname("S")
  p:option("--interval", "Seconds between a user's rounds.", "0", tonumber):argname("S")
  p:option("--rate", "Command starts per second in all (rate-limited); default: closed loop.", nil, tonumber)
    :argname("R")
  p:option("--hold", "Seconds each session stays open after its commands (by count).", "0", tonumber)
    :argname("S")
  p:flag("--barrier", "Start the commands once every user has logged in (or failed): all\n"
    .. "sessions open at once (by count).")
  p:option("-t --timeout", "Seconds each command may take.", "60", tonumber):argname("S")
  p:option("-c --command", "A command of the list (repeatable); COMMAND after -- adds one more.")
    :count("*"):argname("CMD")
  p:option("--threshold", "A pass/fail condition on the figures (repeatable), e.g. 'p99<500'.")
    :count("*"):argname("EXPR")
  p:option("--every", "Print the figures of every S seconds while the run goes on.", nil, tonumber):argname("S")
  p:option("--out", "Stream every sample to FILE (JSON lines).", nil):argname("FILE")
  p:option("--report", "Write an HTML report with charts to FILE.", nil):argname("FILE")
  cli.shard_option(p, "users")
  p:flag("-j --json", "The figures as one JSON object (and --every lines as JSON lines).")
  p:flag("-q --quiet", "No progress line.")
  return p
end

--- Checks the command line; returns the plan {cmds, users, rounds, profile (timed runs),
--- thresholds} or nil and the message.
local function plan_of(args, command)
  local cmds = {}
  for _, c in ipairs(args.command) do cmds[#cmds + 1] = c end
  if command and #command > 0 then cmds[#cmds + 1] = table.concat(command, " ") end
  if #cmds == 0 then return nil, "no command (give -c CMD, or COMMAND after --)" end
  local thresholds, terr = loadstats.thresholds(args.threshold)
  if not thresholds then return nil, terr end
  local plan = { cmds = cmds, thresholds = thresholds }
  local function time_of(name, v)
    local secs = loadstats.seconds(v)
    if not secs then return nil, ("bad %s %q: write seconds, or a number with s, m or h (90, 90s, 5m)"):format(name, v) end
    return secs
  end
  local ramp, rerr = time_of("--ramp", args.ramp)
  if not ramp then return nil, rerr end
  local down, derr = time_of("--ramp-down", args.ramp_down)
  if not down then return nil, derr end
  if args.rate and args.rate <= 0 then return nil, "--rate must be positive" end
  if args.every and args.every <= 0 then return nil, "--every must be positive" end
  if args.grace < 0 or args.timeout <= 0 then return nil, "--grace must be 0 or more, --timeout positive" end
  if args.stages then
    if args.users or args.duration then return nil, "--stages gives the users and the time: not with --users or --duration" end
    if ramp > 0 or down > 0 then return nil, "--stages has its own ramps: not with --ramp or --ramp-down" end
    local stages, serr = loadstats.stages(args.stages)
    if not stages then return nil, serr end
    plan.profile = loadstats.profile(stages)
    if plan.profile.max < 1 then return nil, ("bad --stages %q: no stage has a user"):format(args.stages) end
  elseif args.duration then
    local d, err = time_of("--duration", args.duration)
    if not d then return nil, err end
    if d <= 0 then return nil, ("bad --duration %q: it must be more than 0"):format(args.duration) end
    if ramp + down > d then return nil, "--ramp and --ramp-down together are longer than --duration" end
    local n = math.tointeger(args.users or 100)
    if not n or n < 1 then return nil, "--users must be a whole number from 1" end
    local st = {}
    if ramp > 0 then st[#st + 1] = { duration = ramp, target = n } end
    if d - ramp - down > 0 then st[#st + 1] = { duration = d - ramp - down, target = n } end
    if down > 0 then st[#st + 1] = { duration = down, target = 0 } end
    if ramp == 0 then -- everyone at once: the profile starts at n
      table.insert(st, 1, { duration = 0, target = n })
    end
    plan.profile = loadstats.profile(st)
  end
  if plan.profile then
    if args["repeat"] then return nil, "--repeat counts rounds: not with --duration or --stages (they run by time)" end
    if args.barrier or args.hold > 0 then return nil, "--barrier and --hold are for runs by count, not by time" end
    plan.users = plan.profile.max
  else
    if down > 0 then return nil, "--ramp-down needs --duration" end
    plan.users = math.tointeger(args.users or 100)
    plan.rounds = math.tointeger(args["repeat"] or 1)
    if not plan.users or plan.users < 1 or not plan.rounds or plan.rounds < 0 then
      return nil, "--users must be a whole number from 1, --repeat a whole number from 0"
    end
    plan.ramp = ramp
  end
  return plan
end

function R.main(argv)
  local before, command = cli.split_command(argv)
  local p = parser()
  local args, code = cli.parse(p, before)
  if not args then return code end
  local plan, perr = plan_of(args, command)
  if not plan then
    io.stderr:write(p:get_usage(), "\n\nError: ", perr, "\n")
    return cli.USAGE
  end
  local cjson = (args.json or args.out) and cli.need("cjson", "lua-cjson")
  local shard_k, shard_n = cli.shard_or_usage("stress", args, args.quiet)
  if shard_k == false then return cli.USAGE end
  local hosts, chains = cli.hosts("stress", args, { args.target })
  if not hosts then return chains end
  local out
  if args.out then
    local err
    out, err = io.open(args.out, "w")
    if not out then
      cli.eprintf("stress: --out: %s\n", err)
      return cli.USAGE
    end
    out:setvbuf("full")
  end

  local now = sshchain.core.now
  local profile = plan.profile
  local mode = (profile and (args.stages and ("stages " .. args.stages) or ("for %g s"):format(profile.total)) or
    (plan.rounds .. " round(s)")) .. ", " .. (args.rate and ("rate-limited, " .. args.rate .. " commands/s") or "closed loop")
  local mine = {} -- the users this shard runs (all of them without --shard)
  for u = shard_k or 1, plan.users, shard_n or 1 do mine[#mine + 1] = u end
  local meta = { target = args.target, hosts = #hosts, users = #mine, ["repeat"] = plan.rounds, mode = mode,
    shard = shard_k and (shard_k .. "/" .. shard_n) or nil }
  local stats = loadstats.new(meta)
  local t0, wall0 = now(), sshchain.core.wall()
  if out then
    local run = { kind = "run", version = 1, start = wall0, commands = plan.cmds, users_total = plan.users }
    for k, v in pairs(meta) do run[k] = v end
    cli.json_line(run, out)
  end
  local null = cjson and cjson.null
  --- One sample: into the figures and, with --out, onto the file.
  local function record(kind, u, host, started, code_, err)
    local t = now()
    local s = { time = loadstats.usec(t - t0), user = u, host = host, kind = kind,
      latency_ms = loadstats.tenths(t - started) / 10, code = code_ or "OK", error = err }
    stats:add(s)
    if out then
      if err == nil then s.error = null end
      cli.json_line(s, out)
    end
  end

  local progress = cli.progress(args.quiet or (args.json and not cli.isatty(2)))
  local active = 0 -- users logged in or trying to (in a timed run: those the profile has on)
  local function set_on(me, on)
    if (me.on or false) ~= on then
      me.on = on
      active = active + (on and 1 or -1)
    end
  end
  local function show(force)
    progress:status(("stress: %d/%d logged in (%d now), %d commands, %d failures, %.1f s")
      :format(stats.sessions, plan.users, stats.live, stats.commands, stats.failures, now() - t0), force)
  end
  local next_slot -- the rate-limited schedule starts with the first command
  local gap = args.rate and 1 / args.rate
  local deadline = profile and t0 + profile.total
  local hard_stop = deadline and deadline + args.grace

  local arrived, all_in = 0, sshchain.sched.cond()
  local function barrier(me)
    if me.arrived then return end
    me.arrived = true
    arrived = arrived + 1
    if arrived == #mine then all_in:signal() end
    if args.barrier then
      while arrived < #mine do all_in:wait() end
    end
  end

  local function login(me)
    local l0 = now()
    local s, msg, ecode = sshchain.connect(chains[me.hi])
    if not s then
      record("login", me.u, me.host, l0, ecode or "EERROR", cli.clean(tostring(msg)))
      show()
      return false
    end
    me.session = s
    record("login", me.u, me.host, l0)
    show()
    return true
  end
  local function logout(me)
    if not me.session then return end
    local c0 = now()
    me.session:close()
    me.session = nil
    record("logout", me.u, me.host, c0)
  end
  --- Runs one command; false when the session is lost (timed runs log in again).
  local function command_(me, cmd)
    local c0 = now()
    if gap then -- rate-limited: the next start in the schedule; latency counts from it
      local at = math.max(now(), next_slot or now())
      next_slot = at + gap
      if at > now() then sshchain.sleep(at - now()) end
      c0 = at
    end
    local limit = args.timeout
    if hard_stop then limit = math.min(limit, math.max(hard_stop - now(), 0.001)) end
    local r, xmsg, xcode = me.session:exec(cmd, { timeout = limit })
    if r and r.ok then
      record("command", me.u, me.host, c0)
    elseif r then
      record("command", me.u, me.host, c0, "ESTATUS", ("%q exited with %s"):format(cmd,
        r.signal and ("SIG" .. r.signal) or tostring(r.status)))
    elseif hard_stop and now() >= hard_stop - 0.01 then
      record("command", me.u, me.host, c0, "ECANCELED", "still running when the time was up")
    else
      record("command", me.u, me.host, c0, xcode or "EERROR", cli.clean(tostring(xmsg)))
      if loadstats.LOST[xcode] then return false end
    end
    show()
    return true
  end

  local function by_count(me)
    if plan.ramp > 0 then sshchain.sleep(plan.ramp * (me.u - 1) / plan.users) end
    local ok = login(me)
    barrier(me)
    if not ok then return end
    for round = 1, plan.rounds do
      for _, cmd in ipairs(plan.cmds) do command_(me, cmd) end
      if args.interval > 0 and round < plan.rounds then sshchain.sleep(args.interval) end
    end
    if args.hold > 0 then sshchain.sleep(args.hold) end
  end

  local function by_time(me)
    local u = me.u
    while now() < deadline do
      local t = now() - t0
      if profile:target(t) < u then
        set_on(me, false)
        logout(me)
        local at = profile:next_active(u, t)
        if not at or at >= profile.total then return end
        sshchain.sleep(math.max(at - t, 0.001))
      elseif not me.session and (set_on(me, true) or not login(me)) then
        sshchain.sleep(math.min(1, math.max(deadline - now(), 0.001)))
      elseif me.session then
        for _, cmd in ipairs(plan.cmds) do
          if now() >= deadline or profile:target(now() - t0) < u then break end
          if not command_(me, cmd) then
            logout(me)
            break
          end
        end
        if args.interval > 0 and now() < deadline then
          sshchain.sleep(math.min(args.interval, deadline - now()))
        end
      end
    end
  end

  -- the ticker: progress, the --every lines, and the --out file flushed once a second
  local stop, ticking = sshchain.sched.cond(), true
  local every_lines = {}
  local function tick_line()
    local line = stats:interval_end(now() - t0, active)
    if args.json then
      cli.json_line(line)
      io.stdout:flush()
    else
      progress:finish()
      cli.eprintf("%7.1fs  users %d  sessions %d  logins/s %.1f  commands/s %.1f  p50 %s ms  p99 %s ms  failures %d\n",
        line.time_s, line.users, line.sessions, line.logins_per_s, line.commands_per_s,
        line.p50_ms and tostring(line.p50_ms) or "-", line.p99_ms and tostring(line.p99_ms) or "-", line.failures)
    end
    every_lines[#every_lines + 1] = line
  end
  local ticker = sshchain.spawn(function()
    local next_line = args.every and t0 + args.every
    local last_flush = now()
    if args.every then stats:interval_start(0) end
    while ticking do
      local wait = 0.2
      if next_line then wait = math.min(wait, math.max(next_line - now(), 0)) end
      stop:wait(wait)
      if not ticking then break end
      if next_line and now() >= next_line - 1e-3 then
        tick_line()
        next_line = next_line + args.every
      end
      if out and now() - last_flush >= 1 then
        out:flush()
        last_flush = now()
      end
      show()
    end
  end)

  local ok_run, run_err = pcall(sshchain.parallel, mine, function(u)
    local hi = (u - 1) % #hosts + 1
    local me = { u = u, hi = hi, host = hosts[hi] }
    if not profile then set_on(me, true) end
    local ok, err_ = pcall(profile and by_time or by_count, me)
    set_on(me, false)
    logout(me)
    if not ok then
      if sshchain.is_interrupted(err_) then error(err_, 0) end
      record("command", u, me.host, now(), "EERROR", tostring(err_)) -- a bug, counted and named rather than lost
      barrier(me)
    end
  end)
  local interrupted = not ok_run and sshchain.is_interrupted(run_err)
  ticking = false
  stop:signal()
  if not interrupted then ticker:wait() end
  if not ok_run and not interrupted then error(run_err, 0) end
  show(true)
  progress:finish()
  local duration = loadstats.usec(now() - t0)
  if out then
    cli.json_line({ kind = "end", duration_s = duration, interrupted = interrupted and true or false }, out)
    local cok, cerr = out:close()
    if not cok then cli.eprintf("stress: --out %s: %s\n", args.out, tostring(cerr)) end
  end
  local fig = stats:figures(duration, interrupted)
  local passed = loadstats.check(fig, plan.thresholds)
  if args.json then
    cli.json_line(loadstats.json(fig))
  else
    loadstats.print(fig, #plan.cmds)
  end
  if args.report then
    local rok, rerr = require("sshchain.report").write(args.report, fig, stats:series(duration))
    if not rok then
      cli.eprintf("stress: --report %s: %s\n", args.report, tostring(rerr))
      return cli.FAILED
    end
  end
  if interrupted then return 130 end
  if not passed then
    local names = {}
    for expr, t in pairs(fig.thresholds) do if not t.ok then names[#names + 1] = expr end end
    table.sort(names)
    cli.eprintf("stress: threshold%s failed: %s\n", #names > 1 and "s" or "", table.concat(names, ", "))
  end
  return loadstats.status(fig, plan.thresholds)
end

return R
