-- exec_spec: s:exec and its options, big outputs, and concurrency (tasks, parallel).
local sshchain = require "sshchain"
local H = require "helper"

describe("exec", function()
  local s
  setup(function() s = assert(sshchain.connect(H.spec("j1big"))) end)
  teardown(function()
    s:close()
    H.assert_no_leaks(sshchain)
  end)

  it("returns stdout, stderr, status and ok", function()
    local r = assert(s:exec("echo out; echo err >&2; exit 7"))
    assert.are.same({ "out\n", "err\n", 7, false }, { r.stdout, r.stderr, r.status, r.ok })
  end)

  it("reports a signal", function()
    local r = assert(s:exec("kill -KILL $$"))
    assert.are.equal("KILL", r.signal)
    assert.is_false(r.ok)
  end)

  it("feeds stdin", function()
    local r = assert(s:exec("tr a-z A-Z; echo done", { stdin = "hello\nworld\n" }))
    assert.are.equal("HELLO\nWORLD\ndone\n", r.stdout)
  end)

  it("feeds a big stdin (4 MB) intact", function()
    local data = string.rep("0123456789abcdef", 256 * 1024)
    local r = assert(s:exec("wc -c; md5sum", { stdin = data }))
    assert.matches("^" .. #data .. "\n", r.stdout)
  end)

  it("gives a command without stdin an immediate EOF", function()
    local r = assert(s:exec("cat; echo end", { timeout = 5 }))
    assert.are.equal("end\n", r.stdout)
  end)

  it("runs on a pty when asked", function()
    local r = assert(s:exec("tty", { pty = true }))
    assert.matches("^/dev/pts/", r.stdout)
    r = assert(s:exec("tty"))
    assert.matches("not a tty", r.stdout)
  end)

  it("passes env", function()
    local r = assert(s:exec('printf "%s|%s" "$FOO" "$BAR"', { env = { FOO = "a b", BAR = "it's" } }))
    assert.are.equal("a b|it's", r.stdout)
    assert.has_error(function() s:exec("true", { env = { ["bad name"] = 1 } }) end)
  end)

  it("times out with ETIMEDOUT", function()
    H.failed({ code = "ETIMEDOUT", stage = "exec", reason = "timeout", hop = 1 },
      s:exec("sleep 30", { timeout = 0.5 }))
    -- the session is still usable
    assert.are.equal("ok\n", assert(s:exec("echo ok")).stdout)
  end)

  it("streams output to callbacks as it arrives", function()
    local chunks, errs = {}, {}
    local r = assert(s:exec("for i in 1 2 3; do echo line$i; sleep 0.1; done; echo e >&2", {
      on_stdout = function(c) chunks[#chunks + 1] = c end,
      on_stderr = function(c) errs[#errs + 1] = c end,
    }))
    assert.are.equal("line1\nline2\nline3\n", table.concat(chunks))
    assert.is_true(#chunks >= 2)
    assert.are.equal("e\n", table.concat(errs))
    assert.are.equal(0, r.status)
  end)

  it("keeps the stream without a callback when only the other has one", function()
    local n = 0
    local r = assert(s:exec("echo a; echo b >&2", { on_stderr = function(c) n = n + #c end }))
    assert.are.equal("a\n", r.stdout)
    assert.are.equal(2, n)
  end)

  it("delivers 50 MB of output intact", function()
    local remote = "/tmp/sshchain-50m-" .. os.time()
    assert(s:exec("head -c 50000000 /dev/urandom > " .. remote))
    local sum = assert(s:exec("sha256sum < " .. remote)).stdout:match("^(%x+)")
    local r = assert(s:exec("cat " .. remote .. "; rm -f " .. remote))
    assert.are.equal(50000000, #r.stdout)
    local tmp = H.tmpname()
    H.writefile(tmp, r.stdout)
    local here = H.sh("sha256sum < " .. tmp):match("^(%x+)")
    os.remove(tmp)
    assert.are.equal(sum, here)
  end)

  it("answers a sudo password prompt on a pty", function()
    local t = assert(sshchain.connect(H.chain("t3")))
    local has_sudo = assert(t:exec("command -v sudo")).status == 0
    if has_sudo then
      local r = assert(t:exec("sudo -k; sudo id -u", { sudo_password = H.lab.t3.password, timeout = 20 }))
      assert.are.equal(0, r.status, r.stdout)
      assert.matches("0\r?\n$", r.stdout)
      assert.not_matches("[Pp]assword", r.stdout)
      -- answered once: sudo asking again means the password was refused
      H.failed({ code = "EAUTH", stage = "exec", reason = "denied", hop = 3 },
        t:exec("sudo -k; sudo id -u", { sudo_password = "wrong", timeout = 20 }))
    end
    t:close()
    assert.is_true(has_sudo, "sudo is not installed on the lab")
  end)
end)

describe("concurrency", function()
  after_each(function() H.assert_no_leaks(sshchain) end)

  it("runs 50 tasks, each with its own session, to completion", function()
    local results = sshchain.parallel((function()
      local t = {}
      for i = 1, 50 do t[i] = i end
      return t
    end)(), function(i)
      local s = assert(sshchain.connect(H.spec("j1big", { timeout = 30 })))
      local r = assert(s:exec("echo " .. i))
      s:close()
      return tonumber(r.stdout)
    end)
    assert.are.equal(50, #results)
    for i, r in ipairs(results) do
      assert.is_true(r.ok, r.err)
      assert.are.equal(i, r.value)
    end
  end)

  it("runs 50 concurrent execs on one session (MaxSessions 100)", function()
    local s = assert(sshchain.connect(H.spec("j1big", { max_sessions = 100 })))
    local t0 = sshchain.core.now()
    local items = {}
    for i = 1, 50 do items[i] = i end
    local results = sshchain.parallel(items, function(i)
      return assert(s:exec("sleep 1; echo " .. i)).stdout
    end)
    local elapsed = sshchain.core.now() - t0
    for i, r in ipairs(results) do
      assert.is_true(r.ok, r.err)
      assert.are.equal(i .. "\n", r.value)
    end
    -- 50 one-second commands: concurrent, not one after the other, on one connection
    assert.is_true(elapsed < 25, "took " .. elapsed .. "s")
    assert.are.equal(1, s:connections())
    s:close()
  end)

  it("parallel honours limit and reports failures per item in order", function()
    local running, peak = 0, 0
    local res = sshchain.parallel({ 1, 2, 3, 4, 5, 6 }, function(i)
      running = running + 1
      peak = math.max(peak, running)
      sshchain.sleep(0.05)
      running = running - 1
      if i == 2 then return nil, "EIO: item two", "EIO" end
      if i == 4 then error("boom") end
      return i * 10
    end, { limit = 2 })
    assert.are.equal(2, peak)
    assert.are.same({ ok = true, value = 10 }, res[1])
    assert.are.same({ ok = false, err = "EIO: item two", code = "EIO" }, res[2])
    assert.is_false(res[4].ok)
    assert.matches("boom", res[4].err)
    assert.are.same({ ok = true, value = 60 }, res[6])
  end)

  it("a waiting call outside a task keeps tasks running", function()
    local s = assert(sshchain.connect(H.spec("j1big")))
    local ticks = 0
    local t = sshchain.spawn(function()
      for _ = 1, 5 do
        sshchain.sleep(0.1)
        ticks = ticks + 1
      end
      return "done"
    end)
    assert(s:exec("sleep 1"))
    assert.are.equal(5, ticks)
    assert.are.equal("done", t:wait())
    s:close()
  end)

  it("task:wait returns results and re-raises errors", function()
    local a = sshchain.spawn(function(x, y) return x + y, "two" end, 1, 2)
    local b = sshchain.spawn(function() error("bad thing", 0) end)
    local x, y = a:wait()
    assert.are.same({ 3, "two" }, { x, y })
    assert.has_error(function() b:wait() end, "bad thing")
  end)

  it("run(seconds) drives tasks for that long", function()
    local n = 0
    local t = sshchain.spawn(function()
      while n < 1000 do
        sshchain.sleep(0.05)
        n = n + 1
      end
    end)
    sshchain.run(0.3)
    assert.is_true(n >= 2 and n < 1000)
    n = 1000
    t:wait()
  end)
end)
