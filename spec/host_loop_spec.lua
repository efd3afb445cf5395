-- host_loop_spec: sshchain inside another application's event loop (Debian's lua-luv and
-- lua-cqueues): the host's 100 ms timer keeps its ticks while sshchain runs a command, downloads
-- and serves a forward through the jump hosts, and the process sleeps while it only waits.
local sshchain = require "sshchain"
local H = require "helper"

local TICK = 0.1

--- The share of the ticks a timer started at t0 should have had by t1 that it had. A tick due
--- less than half a tick before t1 is not counted as owed: the body may end in the loop turn in
--- which it came due, before the timer's callback runs (one tick of eight is 12 %).
local function tick_share(ticks, t0, t1)
  local expected = math.floor((t1 - t0 - TICK / 2) / TICK)
  assert.is_true(expected >= 5, "the run was too short to count ticks")
  return ticks / expected
end

--- A file of n MiB on the target, and its sha256.
local function remote_file(s, path, mib)
  local r = assert(s:exec(("head -c %dM /dev/urandom > %s && sha256sum < %s"):format(mib, path, path)))
  return r.stdout:match("^(%x+)")
end

--- Downloads it again and again for `secs` seconds (8 times at most): how many times.
local function download_for(s, local_path, secs)
  local t0, n = sshchain.core.now(), 0
  repeat
    assert(s:download("/home/sclt1/hostloop.bin", local_path))
    n = n + 1
  until sshchain.core.now() - t0 >= secs or n == 8
  return n
end

local function sha256(path) return H.sh("sha256sum < " .. path):match("^(%x+)") end

describe("host loop: luv", function()
  local uv = require "luv"
  local adapter = require "sshchain.luv"

  --- Runs body() in a luv coroutine with a 100 ms luv ticker; returns the tick share, the
  --- seconds it took and the CPU seconds used, and body's results. Each tick is due at t0 + k
  --- ticks, as the cqueues ticker below: a repeating uv timer is re-armed from the time it ran,
  --- so each tick's lateness (a millisecond or two on a busy machine) would push every later
  --- one and count as lost ticks (89 % was seen so, over a run of nine).
  local function with_luv(body)
    local host = adapter.attach(uv)
    local ticks, t1 = 0, nil
    local timer = uv.new_timer()
    local results
    local c0 = os.clock()
    local t0 = uv.hrtime() / 1e9
    uv.update_time()
    local start_ms, k, running = uv.now(), 0, true
    local function arm()
      k = k + 1
      timer:start(math.max(0, start_ms + k * math.floor(TICK * 1000) - uv.now()), 0, function()
        if not running then return end
        ticks = ticks + 1
        arm()
      end)
    end
    arm()
    coroutine.wrap(function()
      results = table.pack(pcall(body))
      t1 = uv.hrtime() / 1e9
      running = false
      timer:stop()
      timer:close()
      host.detach()
    end)()
    uv.run()
    local cpu = os.clock() - c0
    assert(results[1], results[2])
    return tick_share(ticks, t0, t1), t1 - t0, cpu, table.unpack(results, 2, results.n)
  end

  local s
  teardown(function()
    if s then s:close() end
    H.assert_no_leaks(sshchain)
  end)

  it("keeps its ticks, and sleeps, while sshchain connects and runs `sleep 3` through two jumps", function()
    local share, secs, _, r, wait_cpu, wait_secs = with_luv(function()
      s = assert(sshchain.connect(H.chain("t1")))
      -- the wait alone: the connect's handshakes (and a first run's page faults) are work
      local c0, t0 = os.clock(), uv.hrtime() / 1e9
      local res = assert(s:exec("sleep 3; echo slept"))
      return res, os.clock() - c0, uv.hrtime() / 1e9 - t0
    end)
    assert.are.equal("slept\n", r.stdout)
    assert.is_true(secs >= 3 and wait_secs >= 3)
    assert.is_true(share >= 0.9, ("%.0f%% of the ticks"):format(share * 100))
    assert.is_true(wait_cpu / wait_secs < 0.05, ("%.1f%% of a core while waiting"):format(wait_cpu / wait_secs * 100))
  end)

  it("keeps its ticks while 64 MB downloads run", function()
    local local_path = H.tmpname()
    local want = remote_file(s, "/home/sclt1/hostloop.bin", 64)
    local share, _, _, n = with_luv(function() return download_for(s, local_path, 2) end)
    assert.are.equal(want, sha256(local_path))
    os.remove(local_path)
    assert.is_true(n >= 1)
    assert.is_true(share >= 0.9, ("%.0f%% of the ticks"):format(share * 100))
  end)

  it("gives an SFTP file's turn up when the coroutine holding it is closed", function()
    local host = adapter.attach(uv)
    local out
    coroutine.wrap(function()
      out = table.pack(pcall(function()
          local fs = assert(s:sftp())
          assert(fs:write("hostloop-turn.txt", ("t"):rep(200000)))
          local f = assert(fs:open("hostloop-turn.txt"))
          local co = coroutine.create(function() return f:read(200000) end)
          assert(coroutine.resume(co)) -- it waits for a reply, holding the file's turn
          assert.are.equal("suspended", coroutine.status(co))
          assert(coroutine.close(co))
          local g = assert(fs:open("hostloop-turn.txt"))
          local all = g:read(300000)
          assert(g:close())
          local ok = f:close() -- would wait for the turn forever if the closed coroutine kept it
      local sleeper = coroutine.create(function() sshchain.sleep(30) end)
      assert(coroutine.resume(sleeper))
      assert(coroutine.close(sleeper)) -- its timer goes with it (the teardown counts ops)
          assert(fs:remove("hostloop-turn.txt"))
          fs:close()
          sshchain.sleep(0.05) -- a step takes the closed channel's news
          return ok, #all
      end))
      host.detach() -- refuses while a coroutine waits: the closed one does not count
    end)()
    uv.run()
    assert(out[1], out[2])
    assert.is_true(out[2])
    assert.are.equal(200000, out[3])
  end)

  it("serves a forward between its ticks, to clients luv runs", function()
    local share, _, _, bodies = with_luv(function()
      local f = assert(s:forward { to_host = "10.231.3.11", to_port = 8080 })
      local bodies, done = {}, 0
      local me = coroutine.running()
      -- real clients, one after another, started by luv: curl through the forward
      local function fetch(i)
        local out = uv.new_pipe()
        local chunks = {}
        local handle
        handle = uv.spawn("curl", { args = { "-s", "--max-time", "5", ("http://127.0.0.1:%d/index.html"):format(f.port) },
          stdio = { nil, out, nil } }, function()
          handle:close()
        end)
        out:read_start(function(err, data)
          assert(not err, err)
          if data then
            chunks[#chunks + 1] = data
          else
            out:close()
            bodies[i] = table.concat(chunks)
            done = done + 1
            if done == 10 then
              assert(coroutine.resume(me))
            else
              fetch(i + 1)
            end
          end
        end)
      end
      fetch(1)
      coroutine.yield() -- the luv coroutine waits for the ten answers while luv runs
      -- and sshchain's own waits keep serving: a sleep of 1 s in the same coroutine
      sshchain.sleep(1)
      f:close()
      return bodies
    end)
    assert.are.equal(10, #bodies)
    for i = 1, 10 do assert.are.equal("sshchain lab t1\n", bodies[i]) end
    assert.is_true(share >= 0.9, ("%.0f%% of the ticks"):format(share * 100))
  end)

  it("hears of work started from plain luv callbacks (a write, a task), refuses to detach under a wait", function()
    local host = adapter.attach(uv)
    local p = assert(s:spawn("cat > /dev/null"))
    local ran, pending_after, detach_err
    -- from a timer callback (no coroutine, no sshchain wait): nothing else wakes sshchain
    local t1, t2 = uv.new_timer(), uv.new_timer()
    t1:start(100, 0, function() p:write(("x"):rep(1000)) end)
    t2:start(800, 0, function()
      pending_after = p._op:pending() -- before anything else could step sshchain
      sshchain.spawn(function() ran = true end)
      t1:start(700, 0, function()
        t1:close()
        t2:close()
        p:close()
        host.detach()
      end)
    end)
    uv.run()
    assert.is_true(ran, "the task started from a luv callback did not run")
    assert.are.equal(0, pending_after, "the write was not sent")
    -- a coroutine waits on sshchain: detaching under it refuses
    host = adapter.attach(uv)
    coroutine.wrap(function() sshchain.sleep(0.3) end)()
    detach_err = select(2, pcall(host.detach))
    uv.run("once")
    local t3 = uv.new_timer()
    t3:start(500, 0, function() t3:close() host.detach() end)
    uv.run()
    assert.matches("cannot detach while 1 coroutine", tostring(detach_err), 1, true)
  end)

  it("still blocks as before outside a coroutine, and detaches", function()
    local host = adapter.attach(uv)
    assert.has_error(function() adapter.attach(uv) end, "sshchain: a host loop is attached already")
    local r = assert(s:exec("echo outside"))
    assert.are.equal("outside\n", r.stdout)
    host.detach()
    assert.is_nil(require("sshchain.sched").host())
    uv.run() -- luv closes the adapter's handles in its next run, and it has nothing else
  end)
end)

describe("host loop: cqueues", function()
  local cqueues = require "cqueues"
  local socket = require "cqueues.socket"
  local adapter = require "sshchain.cqueues"

  --- Runs body() in a cq:wrap coroutine next to a 100 ms ticker on the same controller.
  local function with_cq(body)
    local cq = cqueues.new()
    local host = adapter.attach(cq)
    local ticks, running, results = 0, true, nil
    local t0 = cqueues.monotime()
    local t1
    local c0 = os.clock()
    cq:wrap(function()
      local k = 1
      while running do
        cqueues.sleep(math.max(0, t0 + k * TICK - cqueues.monotime()))
        if running then ticks = ticks + 1 end
        k = k + 1
      end
    end)
    cq:wrap(function()
      results = table.pack(pcall(body))
      t1 = cqueues.monotime()
      running = false
      host.detach()
    end)
    assert(cq:loop())
    local cpu = os.clock() - c0
    assert(results[1], results[2])
    return tick_share(ticks, t0, t1), t1 - t0, cpu, table.unpack(results, 2, results.n)
  end

  local s
  teardown(function()
    if s then s:close() end
    H.assert_no_leaks(sshchain)
  end)

  it("keeps its ticks, and sleeps, while sshchain connects and runs `sleep 3` through two jumps", function()
    local share, secs, cpu, r = with_cq(function()
      s = assert(sshchain.connect(H.chain("t1")))
      return assert(s:exec("sleep 3; echo slept"))
    end)
    assert.are.equal("slept\n", r.stdout)
    assert.is_true(share >= 0.9, ("%.0f%% of the ticks"):format(share * 100))
    assert.is_true(cpu / secs < 0.05, ("%.1f%% of a core while waiting"):format(cpu / secs * 100))
  end)

  it("keeps its ticks while 64 MB downloads run", function()
    local local_path = H.tmpname()
    local want = remote_file(s, "/home/sclt1/hostloop.bin", 64)
    local share, _, _, n = with_cq(function() return download_for(s, local_path, 2) end)
    assert.are.equal(want, sha256(local_path))
    os.remove(local_path)
    assert.is_true(n >= 1)
    assert.is_true(share >= 0.9, ("%.0f%% of the ticks"):format(share * 100))
  end)

  it("serves a forward to cqueues sockets on the same controller", function()
    local share, _, _, bodies = with_cq(function()
      local f = assert(s:forward { to_host = "10.231.3.11", to_port = 8080 })
      local bodies = {}
      for i = 1, 10 do
        -- binary mode: cqueues' default text mode writes "\n" as "\r\n"
        local c = assert(socket.connect("127.0.0.1", f.port))
        c:setmode("b", "bn")
        assert(c:write("GET /index.html HTTP/1.0\r\nHost: t1\r\n\r\n"))
        local text = assert(c:read("*a"))
        c:close()
        bodies[i] = text:match("\r\n\r\n(.*)$")
      end
      sshchain.sleep(1) -- sshchain's own waits let the controller run (and the run is long enough to count ticks)
      f:close()
      return bodies
    end)
    assert.are.equal(10, #bodies)
    for i = 1, 10 do assert.are.equal("sshchain lab t1\n", bodies[i]) end
    assert.is_true(share >= 0.9, ("%.0f%% of the ticks"):format(share * 100))
  end)

  it("lets several cq:wrap coroutines wait on sshchain at once", function()
    local _, _, _, outs = with_cq(function()
      local cq = cqueues.running()
      local outs, n = {}, 0
      local cond = require("cqueues.condition").new()
      for i = 1, 4 do
        cq:wrap(function()
          outs[i] = assert(s:exec("date +%s%N; sleep 1; date +%s%N")).stdout
          n = n + 1
          cond:signal()
        end)
      end
      while n < 4 do cond:wait() end
      return outs
    end)
    -- they overlapped: every command started before any ended
    local last_start, first_end = 0, math.huge
    for i = 1, 4 do
      local a, b = outs[i]:match("^(%d+)\n(%d+)\n$")
      assert.is_truthy(a, outs[i])
      last_start, first_end = math.max(last_start, tonumber(a)), math.min(first_end, tonumber(b))
    end
    assert.is_true(last_start < first_end, "the commands ran one after another")
  end)
end)

describe("plain lua5.4", function()
  -- the interpreter the suite runs in (sshlua for the sanitizer runs), without sshlua's handler
  local lua = os.getenv("SSHCHAIN_RUNNER") or "lua5.4"

  --- Starts `lua script` in the background; returns its pid and the file its output goes to.
  local function start(script)
    local path, out = H.tmpname() .. ".lua", H.tmpname()
    H.writefile(path, script)
    os.execute(("sh -c '%s %s > %s 2>&1 & echo $! > %s.pid; wait $!; echo rc=$? >> %s' &")
      :format(lua, path, out, out, out))
    local pid
    for _ = 1, 100 do
      pid = tonumber(H.readfile(out .. ".pid") or "")
      if pid then break end
      os.execute("sleep 0.05")
    end
    return assert(pid, "the script did not start"), out, path
  end

  --- Waits (bounded) until pred(output) holds; the output.
  local function wait_for(out, pred, secs)
    local text
    for _ = 1, (secs or 20) * 10 do
      text = H.readfile(out) or ""
      if pred(text) then return text end
      os.execute("sleep 0.1")
    end
    return text
  end

  local prelude = ([[
    package.path = %q .. ";" .. package.path
    local sshchain = require "sshchain"
    local H = require "helper"
  ]]):format(H.root .. "/spec/?.lua")

  it("Ctrl-C interrupts a wait: the script gets sshchain.interrupted and its cleanup runs", function()
    local pid, out, path = start(prelude .. [[
      local s = assert(sshchain.connect(H.chain("t1")))
      print("ready") io.stdout:flush()
      local ok, e = pcall(s.exec, s, "sleep 30")
      print("interrupted", not ok and sshchain.is_interrupted(e))
      s:close()
      print("sessions", sshchain.stats().sessions)
    ]])
    finally(function() os.remove(path) os.remove(out) os.remove(out .. ".pid") end)
    assert.matches("ready", wait_for(out, function(t) return t:find("ready") end))
    os.execute("sleep 0.3") -- into the wait
    os.execute("kill -INT " .. pid)
    local text = wait_for(out, function(t) return t:find("rc=") end)
    assert.matches("interrupted\ttrue\n", text, 1, true)
    assert.matches("sessions\t0\n", text, 1, true)
    assert.matches("rc=0", text, 1, true)
  end)

  it("Ctrl-C during a download removes its temporary file, and the error ends the script", function()
    local dir = H.tmpname() .. ".d"
    assert(os.execute("mkdir " .. dir))
    local pid, out, path = start(prelude .. ([[
      local s = assert(sshchain.connect(H.chain("t1")))
      assert(s:exec("truncate -s 8G /tmp/sshchain-int.bin"))
      print("ready") io.stdout:flush()
      s:download("/tmp/sshchain-int.bin", %q)
      print("not interrupted")
    ]]):format(dir .. "/big.bin"))
    finally(function()
      os.execute("rm -rf " .. dir)
      os.remove(path) os.remove(out) os.remove(out .. ".pid")
    end)
    assert.matches("ready", wait_for(out, function(t) return t:find("ready") end))
    for _ = 1, 100 do -- until the temporary file is there
      if H.sh("ls -A " .. dir) ~= "" then break end
      os.execute("sleep 0.1")
    end
    assert.are_not.equal("", H.sh("ls -A " .. dir), "the download did not start")
    os.execute("kill -INT " .. pid)
    local text = wait_for(out, function(t) return t:find("rc=") end)
    assert.matches("interrupted!", text, 1, true)
    assert.is_nil(text:find("not interrupted", 1, true))
    assert.matches("rc=1", text, 1, true)
    assert.are.equal("", H.sh("ls -A " .. dir))
    local s = assert(sshchain.connect(H.chain("t1")))
    s:exec("rm -f /tmp/sshchain-int.bin")
    s:close()
  end)
end)
