-- exec: run a command on many hosts at once, each through its jump hosts, and collect the results.
local sshchain = require "sshchain"
local cli = require "sshchain.cli"
local process = require "sshchain.process"
local sched = require "sshchain.sched"
local retry = require "sshchain.retry"

local R = { summary = "run a command on many hosts in parallel, through their jump hosts" }

local DESCRIPTION = [[
Runs COMMAND on every selected host, at most --limit at once, each through the chain of jump
hosts its inventory entry describes. Hosts behind the same jump hosts share one connection to
each of them. The command words are joined with spaces and run by the remote user's shell.

TARGET is a host name, a group, or a glob pattern (quote it: 'node*'); with an ssh_config
inventory, any name ssh_config resolves.

Output (standard output): a table of host, status, time and output, in the order selected;
with --lines every output line prefixed by its host as soon as it arrives; with --json one JSON
object per host as it finishes: host, address, port, ok, code, error, seconds (the keys of every
recipe's rows), stdout, stderr, status, signal.

--retries N tries a host again when it failed in a way of the network (not once a streamed
standard input, for one host, was read: that input is gone). Every hop gets keepalive probes
(--keepalive, unless its inventory entry sets ServerAliveInterval), so a link that stalls fails
in bounded time.

--shard K/N runs part K of N of the selected hosts (for job arrays; sshlua -r merge joins the
parts' --json outputs).
Progress and the summary go to standard error.

Standard input, when it is not a terminal, goes to the command as ssh sends it (-n: not at
all): streamed to a single host; read whole first and given to each host when there are several.

--shell is for devices that only speak an interactive shell (BMC and switch CLIs that refuse
exec): each line of COMMAND is typed on a shell with a pty after the device's prompt, pagers
("--More--", see --more) are answered with a space, and the output is what appears before the
next prompt (see --prompt), without the echo of the line. The status is "ok" once every line got
its prompt back; each wait times out after --timeout seconds (30 when it is 0).]]

local EPILOG = [[
Examples:
   sshlua -r exec -i /tmp/sshchain-lab/inventory.lua targets -- uptime
   sshlua -r exec -i ~/.ssh/config 'node*' --limit 64 --json -- ipmitool sdr > sdr.jsonl
   sshlua -r exec -i inventory.lua compute --lines -- 'dmesg | tail -3'
   sshlua -r exec -i inventory.lua bmcs --shell --prompt 'bmc[>#] ' -- 'show sensors'
   sshlua -r exec -i inventory.lua nodes -- 'cat > /tmp/motd' < motd.txt

Exit status:
   0  the command ran on every host and exited 0
   1  some host failed: unreachable, or the command exited non-zero (each host says why)
   2  bad command line or inventory
   130  interrupted (Ctrl-C): the hosts done so far are shown

Environment:
   SSHCHAIN_INVENTORY   the inventory when --inventory is not given]]

local function parser()
  local p = cli.parser("exec", DESCRIPTION, EPILOG)
  p:usage("Usage: sshlua -r exec [options] TARGET... -- COMMAND...")
  p:argument("targets", "Hosts, groups or patterns to run on."):args("+"):argname("TARGET")
  cli.connection_options(p)
  p:option("-l --limit", "Hosts at once.", "32", tonumber):argname("N")
  p:option("-t --timeout", "Seconds the command may run on each host (0: no limit).", "0", tonumber)
    :argname("S")
  p:flag("--pty", "Run the command on a pseudo-terminal.")
  p:flag("-n --no-stdin", "Send nothing on the command's standard input (as ssh -n).")
  p:flag("--shell", "Type each line of COMMAND on an interactive shell (devices that refuse exec).")
  p:option("--prompt", "With --shell: the prompt, a Lua pattern matched at the end of the output.",
    process.DEFAULT_PROMPT):argname("PATTERN")
  p:option("--more", "With --shell: a pager's prompt, answered with a space.", process.DEFAULT_MORE)
    :argname("PATTERN")
  p:mutex(p:flag("-j --json", "One JSON object per host."),
    p:flag("--lines", "Each output line prefixed with its host."))
  cli.retries_option(p)
  cli.shard_option(p, "hosts")
  p:flag("-q --quiet", "No progress line and no summary.")
  return p
end

--- The status column: ok, exit N, SIGNAL, or the failure CODE.
local function status_of(r)
  if r.error then return r.code end
  if r.signal then return "SIG" .. r.signal end
  if r.status == nil then return "no status" end
  if r.status ~= 0 then return "exit " .. tostring(r.status) end
  return "ok"
end

local function failed(r) return r.error or r.signal or r.status ~= 0 end

--- --lines: each output line goes out as soon as it is complete, prefixed by its host ("! " for
--- stderr); what is left of a line when the command ends, then the failure, at the end.
local function line_printer(host, mark)
  local partial = ""
  local function emit(line) io.stdout:write(host, mark, cli.clean(line), "\n") end
  return function(chunk)
    local text = partial .. chunk
    local last = 1
    for line, nl in text:gmatch("([^\n]*)\n()") do
      emit(line)
      last = nl
    end
    partial = text:sub(last)
    io.stdout:flush()
  end, function()
    if partial ~= "" then emit(partial) end
    partial = ""
  end
end

--- --shell: types each line of cmd on a shell with a pty, after the prompt; the output of all
--- lines (given to on_out line by line as each completes), as exec gives it.
local function run_shell(s, cmd, args, on_out)
  local wait = args.timeout > 0 and args.timeout or 30
  local p, msg, code, err = s:spawn(nil, { pty = true })
  if not p then return nil, msg, code, err end
  local i, m, c, e = p:expect(process.anchor(args.prompt), wait)
  if not i then
    p:close()
    local seen = cli.clean(process.screen_text(e and e.before or ""):sub(-80))
    if m == "EOF" then
      return nil, ("EIO: the shell ended before a prompt matching %s (last output: %q)"):format(args.prompt, seen), "EIO"
    end
    return nil, ("%s (see --prompt; last output: %q)"):format(m, seen), c, e
  end
  local out = {}
  for line in cmd:gmatch("[^\n]+") do
    local o, m2, c2, e2 = p:command(line, { prompt = args.prompt, more = args.more, timeout = wait })
    if not o then
      p:close()
      return nil, m2, c2, e2
    end
    out[#out + 1] = o
    if on_out then on_out(o) end
  end
  p:close()
  return { stdout = table.concat(out), stderr = "", status = 0 }
end

--- What the command gets on stdin: nothing with -n, --shell or a terminal; else a streaming
--- reader for one host, the whole input for several (each gets all of it).
local function stdin_of(args, nhosts)
  if args.no_stdin or args.shell or cli.isatty(0) then return nil end
  if nhosts > 1 then return io.stdin:read("a") end
  local read = { any = false }
  return function()
    for _ = 1, 1000 do -- a readable fd with nothing to read ("" from read_fd): wait again
      sched.await(sshchain.core.readable(0)) -- the other hosts' work goes on meanwhile
      local chunk, err = sshchain.core.read_fd(0, 65536)
      if err then error("exec: reading standard input: " .. err, 0) end
      if chunk == nil then return nil end
      if chunk ~= "" then
        read.any = true
        return chunk
      end
    end
    error("exec: standard input is readable but gives nothing", 0)
  end, read
end

local function print_status(r)
  local out = io.stdout
  if r.error then
    out:write(r.host, "! ", cli.clean(r.error), "\n")
  elseif failed(r) then
    out:write(r.host, "! ", status_of(r), "\n")
  end
end

local function print_table(results)
  local rows = {}
  for _, r in ipairs(results) do
    local lines = {}
    if r.error then
      lines[1] = cli.clean(r.error)
    else
      for line in r.stdout:gmatch("[^\n]*") do lines[#lines + 1] = cli.clean(line) end
      while #lines > 0 and lines[#lines] == "" do lines[#lines] = nil end
      for line in r.stderr:gmatch("[^\n]+") do lines[#lines + 1] = "! " .. cli.clean(line) end
    end
    rows[#rows + 1] = { r.host, status_of(r), ("%.2fs"):format(r.seconds or 0), lines[1] or "" }
    for i = 2, #lines do rows[#rows + 1] = { "", "", "", lines[i] } end
  end
  cli.table({ "HOST", "STATUS", "TIME", "OUTPUT" }, rows)
end

function R.main(argv)
  local before, command = cli.split_command(argv)
  local p = parser()
  local args, code = cli.parse(p, before)
  if not args then return code end
  if not command or #command == 0 then
    io.stderr:write(p:get_usage(), "\n\nError: no command (give it after --)\n")
    return cli.USAGE
  end
  local cmd = table.concat(command, " ")
  if args.json then cli.need("cjson", "lua-cjson") end
  local shard_k, shard_n = cli.shard_or_usage("exec", args, args.quiet)
  if shard_k == false then return cli.USAGE end
  local names, chains, _, selected = cli.hosts("exec", args, args.targets, { shard = shard_k and { shard_k, shard_n } })
  if not names then return chains end
  local progress = cli.progress(args.quiet or args.json and not cli.isatty(2))
  local t0 = sshchain.core.now()
  local finished, nfailed = 0, 0
  local results = {}
  local stdin, stdin_read = stdin_of(args, #names)
  local function report(r)
    if args.json or args.lines then progress:finish() end
    if args.json then
      cli.json_line(cli.row({ host = r.host, ok = not failed(r), stdout = r.stdout, stderr = r.stderr,
        status = r.status, signal = r.signal, seconds = r.seconds, error = r.error, code = r.code,
        attempts = r.attempts }, r.spec))
      io.stdout:flush()
    elseif args.lines then
      print_status(r)
      io.stdout:flush()
    end
  end
  local policy, perr = cli.retry_policy(args)
  if perr then
    io.stderr:write(p:get_usage(), "\n\nError: ", perr, "\n")
    return cli.USAGE
  end
  local function run(name, i)
    local r = { host = name, spec = chains[i][#chains[i]] }
    local h0 = sshchain.core.now()
    local function once()
      local s, msg, ecode, info = sshchain.connect(chains[i])
      if not s then
        r.unreachable = true
        return nil, msg, ecode, info
      end
      r.unreachable = nil
      local x
      local xopts = { timeout = args.timeout > 0 and args.timeout or nil, pty = args.pty, stdin = stdin }
      local out_end, err_end
      if args.lines then
        progress:finish()
        xopts.on_stdout, out_end = line_printer(name, ": ")
        xopts.on_stderr, err_end = line_printer(name, "! ")
      end
      if args.shell then
        x, msg, ecode, info = run_shell(s, cmd, args, xopts.on_stdout)
      else
        x, msg, ecode, info = s:exec(cmd, xopts)
      end
      if out_end then
        out_end()
        err_end()
      end
      s:close()
      return x, msg, ecode, info
    end
    local hp = policy and stdin_read and setmetatable({ allow = function() return not stdin_read.any end },
      { __index = policy }) or policy -- streamed input, once read, is gone: not tried again
    local x, msg, ecode, _, attempts = retry.run(hp, once,
      function(n, m, _, _, wait)
        if args.quiet then return end
        progress:finish()
        cli.eprintf("exec: %s: attempt %d of %d failed (%s); again in %.1f s\n", name, n, policy.count + 1,
          cli.clean(m), wait)
      end)
    r.attempts = attempts
    if x then
      r.stdout, r.stderr, r.status, r.signal = x.stdout, x.stderr, x.status, x.signal
    end
    if msg then r.error, r.code = msg, ecode end
    r.seconds = sshchain.core.now() - h0
    results[i] = r
    finished = finished + 1
    if failed(r) then nfailed = nfailed + 1 end
    report(r)
    progress:status(("exec: %d/%d hosts done, %d failed"):format(finished, #names, nfailed), true)
  end
  progress:status(("exec: %d hosts, %d at once"):format(#names, args.limit), true)
  local ok, out = pcall(sshchain.parallel, names, run, { limit = math.max(1, args.limit) })
  local interrupted = not ok and sshchain.is_interrupted(out)
  if not ok and not interrupted then error(out, 0) end
  for i, o in ipairs(ok and out or {}) do -- a task that raised: a bug, but report the host, do not lose it
    if not o.ok and not results[i] then
      results[i] = { host = names[i], spec = chains[i][#chains[i]], error = o.err, code = o.code, seconds = 0 }
      nfailed = nfailed + 1
      report(results[i])
    end
  end
  progress:finish()
  local done = {}
  for i = 1, #names do if results[i] then done[#done + 1] = results[i] end end
  if not args.json and not args.lines then print_table(done) end
  io.stdout:flush()
  if not args.quiet or interrupted then
    local unreachable = 0
    for _, r in ipairs(done) do if r.unreachable then unreachable = unreachable + 1 end end
    cli.eprintf("%s%d hosts%s: %d ok, %d failed (%d unreachable) in %.2f s\n",
      interrupted and ("interrupted: " .. #done .. " of ") or "", #names,
      shard_k and (" (shard %d/%d of %d)"):format(shard_k, shard_n, selected) or "", #done - nfailed, nfailed,
      unreachable, sshchain.core.now() - t0)
  end
  if interrupted then return 130 end
  return nfailed > 0 and cli.FAILED or cli.OK
end

return R
