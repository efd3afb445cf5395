-- unit: the figures of a load run (sshchain.loadstats): exact percentiles from histograms,
-- the time series that coarsens without losing a sample, thresholds, stage profiles, samples
-- files read back (and refused when cut short), and the shard split of sshchain.cli.
require "sshchain" -- registers the modules compiled into it
local loadstats = require "sshchain.loadstats"
local cli = require "sshchain.cli"
local cjson = require "cjson"

local function sample(t, kind, ms, code, user)
  return { time = t, user = user or 1, host = "h", kind = kind, latency_ms = ms, code = code or "OK",
    error = code and code ~= "OK" and ("failed with " .. code) or nil }
end

describe("loadstats", function()
  it("gives the nearest-rank percentiles of the samples, exactly, at 0.1 ms", function()
    local r = 12345
    local function rand(n) -- an LCG: the same list on every run
      r = (r * 1103515245 + 12345) % 2147483648
      return r % n
    end
    local st = loadstats.new { target = "x" }
    local list = {}
    st:add(sample(0, "login", 5))
    for i = 1, 5000 do
      local ms = rand(30000) / 10 -- 0.0 .. 2999.9
      list[#list + 1] = ms
      st:add(sample(i / 1000, "command", ms))
    end
    table.sort(list)
    local fig = st:figures(5)
    assert.are.same({ cli.percentile(list, 50), cli.percentile(list, 90), cli.percentile(list, 99), list[#list] },
      { fig.p50_ms, fig.p90_ms, fig.p99_ms, fig.max_ms })
    assert.are.same({ 5000, 5000, 0, 1000.0 }, { fig.commands, fig.commands_ok, fig.failures, fig.commands_per_s })
  end)

  it("counts sessions, peaks and failures by CODE, and leaves commands cut off at the end out", function()
    local st = loadstats.new {}
    st:add(sample(0.1, "login", 100, "OK", 1))
    st:add(sample(0.2, "login", 100, "OK", 2))
    st:add(sample(0.3, "login", 3000, "ECONNECT", 3))
    st:add(sample(0.4, "command", 10, "ESTATUS", 1))
    st:add(sample(0.5, "logout", 1, "OK", 1))
    st:add(sample(0.6, "login", 100, "OK", 1))
    st:add(sample(0.7, "command", 10, "ECANCELED", 2))
    local fig = st:figures(1)
    assert.are.same({ 3, 1, 2, 1, 0, 1 },
      { fig.sessions, fig.sessions_failed, fig.peak_sessions, fig.commands, fig.commands_ok, fig.commands_canceled })
    assert.are.same({ ECONNECT = 1, ESTATUS = 1 }, fig.failures_by_code)
    assert.are.equal("h: failed with ECONNECT", fig.failure_examples.ECONNECT)
    assert.are.equal(40, fig.failures_pct) -- 2 of 4 logins + 1 command
    -- the same keys in every run, nil ones as JSON null
    local empty = loadstats.json(loadstats.new {}:figures(0))
    for _, k in ipairs(loadstats.KEYS) do assert.is_true(empty[k] ~= nil, k) end
    assert.are.equal(cjson.null, empty.p99_ms)
    assert.are.equal('{}', cjson.encode(empty.thresholds))
  end)

  it("keeps at most MAX_BUCKETS buckets, doubling their width, with every sample still counted", function()
    local st = loadstats.new {}
    st:add(sample(0, "login", 1))
    local n = 0
    for t = 0, 2000, 0.5 do
      st:add(sample(t, "command", 1 + t % 7))
      n = n + 1
    end
    local s = st:series(2000)
    assert.is_true(#s.buckets <= loadstats.MAX_BUCKETS)
    assert.are.equal(4, s.width) -- 2001 s in buckets of 1, 2, then 4 s
    local total = 0
    for _, b in ipairs(s.buckets) do total = total + b.commands_per_s * b.span end
    assert.is_true(math.abs(total - n) < 1e-6, total)
    assert.are.equal(1, s.buckets[#s.buckets].sessions)
  end)

  it("parses and checks thresholds; a metric with no value fails", function()
    local th = assert(loadstats.threshold("p99 < 500"))
    assert.are.same({ "p99_ms", "<", 500 }, { th.key, th.op, th.value })
    assert.are.equal("failures_pct", loadstats.threshold("failures<1%").key)
    assert.are.equal("failures", loadstats.threshold("failures==0").key)
    assert.are.equal("logins_p99_ms", loadstats.threshold("logins_p99<3000").key)
    assert.are.equal("commands_per_s", loadstats.threshold("commands_per_s>100").key)
    assert.are.equal("duration_s", loadstats.threshold("duration>=10").key)
    for _, bad in ipairs { "p99", "p99<", "p99<<5", "p99 < x", "<5", "nosuch<1", "p99<5%", "p99=>5" } do
      local ok, err = loadstats.threshold(bad)
      assert.is_nil(ok, bad)
      assert.matches(bad, err, 1, true)
    end
    local fig = { p99_ms = 400, failures_pct = 2, commands_per_s = nil }
    local list = {}
    for _, e in ipairs { "p99<500", "failures<1%", "commands_per_s>1" } do list[#list + 1] = loadstats.threshold(e) end
    assert.is_false(loadstats.check(fig, list))
    assert.are.same({ true, false, false },
      { fig.thresholds["p99<500"].ok, fig.thresholds["failures<1%"].ok, fig.thresholds["commands_per_s>1"].ok })
  end)

  it("reads stage lists and follows their profile: users on, off and on again", function()
    assert.are.same({ { duration = 30, target = 50 }, { duration = 120, target = 200 }, { duration = 30, target = 0 } },
      loadstats.stages("30s:50,2m:200,30s:0"))
    assert.are.equal(5400, loadstats.seconds("1.5h"))
    for _, bad in ipairs { "", "30s", "30s:", "x:5", "30s:5,,1s:0", "0s:5", "30s:-1", "30q:4" } do
      local ok, err = loadstats.stages(bad)
      assert.is_nil(ok, bad)
      assert.matches("bad stage", err, 1, true)
    end
    local p = loadstats.profile(assert(loadstats.stages("10s:10,10s:0,10s:10")))
    assert.are.same({ 0, 5, 10, 5, 0, 10 }, { p:target(0), p:target(5), p:target(10), p:target(15), p:target(20),
      p:target(30) })
    assert.are.equal(30, p.total)
    assert.are.equal(10, p.max)
    assert.are.equal(4, p:next_active(4, 0)) -- rising: user 4 comes at 4 s
    assert.are.equal(24, p:next_active(4, 17)) -- gone at 16 s, back at 24 s
    assert.are.equal(12, p:next_active(8, 12)) -- still on at 12 s
    assert.is_nil(p:next_active(11, 0)) -- never
  end)

  it("reads a samples file back and refuses one cut short, naming the line", function()
    local path = os.tmpname()
    finally(function() os.remove(path) end)
    local lines = {
      cjson.encode { kind = "run", start = 1000.5, target = "t", users = 2, hosts = 1, mode = "m" },
      cjson.encode(sample(0.1, "login", 100)), cjson.encode(sample(0.2, "command", 12.3)),
      cjson.encode(sample(0.3, "logout", 0.1)), cjson.encode { kind = "end", duration_s = 0.4, interrupted = false },
    }
    local function write(text)
      local f = assert(io.open(path, "w"))
      f:write(text)
      f:close()
    end
    write(table.concat(lines, "\n") .. "\n")
    local fig = assert(loadstats.load({ path }, {}))
    assert.are.same({ 2, 1, 12.3, 0.4 }, { fig.users, fig.commands, fig.p50_ms, fig.duration_s })
    write(table.concat(lines, "\n", 1, 3) .. "\n" .. lines[4]:sub(1, 10))
    local _, err = loadstats.load({ path }, {})
    assert.matches(": line 4: not a JSON object", err, 1, true)
    write(table.concat(lines, "\n", 1, 4) .. "\n")
    _, err = loadstats.load({ path }, {})
    assert.matches("ends at line 4 without the run's end record", err, 1, true)
    write(lines[1] .. "\n" .. '{"kind":"command","time":1}\n')
    _, err = loadstats.load({ path }, {})
    assert.matches("line 2: not a sample", err, 1, true)
    write('{"host":"x","ok":true}\n')
    _, err = loadstats.load({ path }, {})
    assert.matches("line 1 is not the run record", err, 1, true)
  end)
end)

describe("cli shards", function()
  local function env(t) return function(k) return t[k] end end

  it("splits a list into N disjoint parts that together cover it, N = 1..7", function()
    local list = {}
    for i = 1, 23 do list[i] = ("h%02d"):format(i) end
    for n = 1, 7 do
      local seen, sizes = {}, {}
      for k = 1, n do
        local part = cli.take_shard(list, k, n)
        sizes[k] = #part
        for _, h in ipairs(part) do
          assert.is_nil(seen[h], h)
          seen[h] = k
        end
      end
      for _, h in ipairs(list) do assert.is_truthy(seen[h], h) end
      table.sort(sizes)
      assert.is_true(sizes[#sizes] - sizes[1] <= 1) -- balanced
    end
  end)

  it("takes K/N from --shard, a Kubernetes Indexed Job or a Slurm array, and refuses bad ones", function()
    assert.are.same({ 2, 4, '--shard "2/4"' }, { cli.shard({ shard = "2/4" }, env {}) })
    assert.are.same({}, { cli.shard({}, env {}) })
    assert.are.same({ 3, 5 }, { (cli.shard({}, env { JOB_COMPLETION_INDEX = "2", SSHCHAIN_SHARDS = "5" })), 5 })
    local k, n = cli.shard({}, env { SLURM_ARRAY_TASK_ID = "7", SLURM_ARRAY_TASK_MIN = "5", SLURM_ARRAY_TASK_COUNT = "4" })
    assert.are.same({ 3, 4 }, { k, n })
    k, n = cli.shard({}, env { SLURM_ARRAY_TASK_ID = "8", SLURM_ARRAY_TASK_MIN = "0", SLURM_ARRAY_TASK_STEP = "4",
      SLURM_ARRAY_TASK_COUNT = "4" }) -- --array=0-12:4
    assert.are.same({ 3, 4 }, { k, n })
    k = cli.shard({ shard = "1/1" }, env { JOB_COMPLETION_INDEX = "2", SSHCHAIN_SHARDS = "5" })
    assert.are.equal(1, k) -- --shard wins over the environment
    for _, case in ipairs {
      { { shard = "3/2" }, {}, "--shard" }, { { shard = "0/2" }, {}, "--shard" }, { { shard = "x" }, {}, "--shard" },
      { { shard = "1/0" }, {}, "--shard" }, { {}, { JOB_COMPLETION_INDEX = "1" }, "SSHCHAIN_SHARDS" },
      { {}, { JOB_COMPLETION_INDEX = "5", SSHCHAIN_SHARDS = "5" }, "JOB_COMPLETION_INDEX=5" },
      { {}, { SLURM_ARRAY_TASK_ID = "3" }, "SLURM_ARRAY_TASK_ID=3" },
    } do
      local a, b, msg = cli.shard(case[1], env(case[2]))
      assert.is_nil(a)
      assert.is_nil(b)
      assert.matches(case[3], msg, 1, true)
    end
  end)
end)
