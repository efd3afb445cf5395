-- load_spec: load tests people can gate on and work split over job arrays, as a user runs them
-- (sshlua -r stress / merge / report / exec --shard) against the lab through its jump hosts:
-- runs by time and by stages, thresholds and their exit status, the --every lines, every sample
-- in --out and its merge equal to the live figures, the HTML report drawn by headless Chromium,
-- shards disjoint and complete (and GNU parallel as README shows it), and the bad inputs.
local sshchain = require "sshchain"
local H = require "helper"
local cjson = require "cjson"

local q = sshchain.shell_quote
local INV = H.lab.inventory
local REPORT_COLORS = require("sshchain.report").COLORS

--- Runs `sshlua -r ARGS` with the lab's secrets in the environment: stdout, stderr, status.
local function recipe(args, env)
  local out, err = H.tmpname(), H.tmpname()
  local cmd = (". %s; %s %s/sshlua -r %s > %s 2> %s < /dev/null"):format(q(H.lab.inventory_env), env or "", H.build,
    args, out, err)
  local _, _, status = os.execute(cmd)
  local o, e = H.readfile(out) or "", H.readfile(err) or ""
  os.remove(out)
  os.remove(err)
  return o, e, status
end

local function json_lines(text)
  local list = {}
  for line in text:gmatch("[^\n]+") do list[#list + 1] = cjson.decode(line) end
  return list
end

local function lines_of(path)
  local l = {}
  for line in io.lines(path) do l[#l + 1] = cjson.decode(line) end
  return l
end

local stress = "stress -i " .. q(INV) .. " "
local FIGURE_KEYS = require("sshchain.loadstats").KEYS

describe("stress by time", function()
  it("stops on time, streams every sample to --out, and merge gives back the live figures", function()
    local out = H.tmpname() .. ".jsonl"
    finally(function() os.remove(out) end)
    local t0 = sshchain.core.now()
    local text, err, status = recipe(stress .. "--users 6 --duration 3 --ramp 1 --ramp-down 1 --json --out " .. q(out)
      .. " -c true -c 'echo x' t4")
    local wall = sshchain.core.now() - t0
    assert.are.equal(0, status, err)
    local live = cjson.decode(text)
    -- the same keys in every run, units in their names
    for _, k in ipairs(FIGURE_KEYS) do assert.is_true(live[k] ~= nil, k) end
    -- the last user leaves during the ramp-down (user 1 when fewer than 1 of 6 remain)
    assert.is_true(live.duration_s >= 3 - 1 and live.duration_s < 3 + 10, live.duration_s)
    assert.is_true(wall < 3 + 15, wall) -- stopped on time (grace 10 s at most, plus start-up)
    assert.are.same({ 6, 0, 6, 0 }, { live.sessions, live.sessions_failed, live.peak_sessions, live.failures })
    assert.is_true(live.commands > 12, live.commands) -- users looped over the list
    -- one line per sample, between the run record and the end record
    local l = lines_of(out)
    assert.are.equal("run", l[1].kind)
    assert.are.equal("end", l[#l].kind)
    local kinds = {}
    for i = 2, #l - 1 do
      local s = l[i]
      kinds[s.kind] = (kinds[s.kind] or 0) + 1
      assert.are.equal("t4", s.host)
      assert.is_true(s.user >= 1 and s.user <= 6 and s.latency_ms >= 0 and s.time >= 0)
      assert.are.equal("OK", s.code)
    end
    assert.are.same({ login = 6, logout = 6, command = live.commands + live.commands_canceled },
      { login = kinds.login, logout = kinds.logout, command = kinds.command })
    local merged, merr, mstatus = recipe("merge --json " .. q(out))
    assert.are.equal(0, mstatus, merr)
    assert.are.same(live, cjson.decode(merged))
  end)

  it("follows --stages and prints the figures of every interval as JSON lines", function()
    local text, err, status = recipe(stress .. "--stages 1s:4,1s:8,1s:0 --every 1 --json t4 -- true")
    assert.are.equal(0, status, err)
    local l = json_lines(text)
    local summary = table.remove(l)
    assert.are.equal("summary", summary.type)
    assert.is_true(#l >= 2 and #l <= 3, #l)
    for _, iv in ipairs(l) do
      assert.are.equal("interval", iv.type)
      for _, k in ipairs { "time_s", "users", "sessions", "logins_per_s", "commands_per_s", "failures" } do
        assert.is_number(iv[k], k)
      end
      assert.is_true(iv.users <= 8)
    end
    assert.is_true(summary.peak_sessions >= 4 and summary.peak_sessions <= 8, summary.peak_sessions)
    assert.are.equal(8, summary.users)
    assert.are.equal(0, summary.failures)
  end)
end)

describe("stress thresholds", function()
  it("pass (exit 0), fail (exit 99, named), and gate failures instead of exit 1", function()
    local text, err, status = recipe(stress .. "--users 4 --repeat 2 --threshold 'p99<60000' "
      .. "--threshold 'commands_per_s>0.1' --threshold 'failures==0' t4 -- true")
    assert.are.equal(0, status, err)
    assert.matches("threshold p99<60000: ok", text, 1, true)
    text, err, status = recipe(stress .. "--users 4 --repeat 2 --threshold 'p99<0.01' --json t4 -- true")
    assert.are.equal(99, status)
    assert.matches("threshold failed: p99<0.01", err, 1, true)
    local f = cjson.decode(text)
    assert.is_false(f.thresholds_ok)
    assert.are.same({ metric = "p99_ms", value = f.p99_ms, ok = false }, f.thresholds["p99<0.01"])
    -- half the commands fail: exit 1 without thresholds, 99 over 1%, 0 under 60 %
    local _, _, s1 = recipe(stress .. "--users 2 -c true -c false t4")
    assert.are.equal(1, s1)
    local _, e2, s2 = recipe(stress .. "--users 2 -c true -c false --threshold 'failures<1%' t4")
    assert.are.equal(99, s2)
    assert.matches("failures<1%", e2, 1, true)
    local _, e3, s3 = recipe(stress .. "--users 2 -c true -c false --threshold 'failures<60%' t4")
    assert.are.equal(0, s3, e3)
  end)

  it("refuses a malformed threshold or stage list, naming it (exit 2)", function()
    for _, case in ipairs {
      { "--threshold 'p99<<5'", 'bad threshold "p99<<5"' },
      { "--threshold 'nosuch>1'", 'no metric "nosuch"' },
      { "--threshold 'p99<5%'", "only failures takes a %" },
      { "--stages 10s:5,x:3", 'bad stage "x:3"' },
      { "--stages 10s:5,10s", 'bad stage "10s"' },
      { "--duration 2 --repeat 3", "--repeat counts rounds" },
      { "--duration 2 --ramp 2 --ramp-down 1", "longer than --duration" },
      { "--ramp-down 1", "--ramp-down needs --duration" },
      { "--shard 3/2", 'bad shard from --shard "3/2"' },
      { "--shard 0/2", 'bad shard from --shard "0/2"' },
    } do
      local _, err, status = recipe(stress .. case[1] .. " t4 -- true")
      assert.are.equal(2, status, case[1])
      assert.matches(case[2], err, 1, true)
    end
  end)
end)

describe("stress report", function()
  it("writes one HTML file whose charts headless Chromium draws, and report makes it again from --out", function()
    local dir = H.tmpname()
    assert(os.execute("mkdir -p " .. q(dir)))
    finally(function() os.execute("rm -rf " .. q(dir)) end)
    local html, samples = dir .. "/load.html", dir .. "/load.jsonl"
    local _, err, status = recipe(stress .. "--users 4 --duration 3 --interval 0.05 --out " .. q(samples) .. " --report "
      .. q(html) .. " --threshold 'failures<100%' -c true -c false t4")
    assert.are.equal(0, status, err)
    local page = assert(H.readfile(html))
    assert.is_nil(page:find("<script", 1, true)) -- nothing to run, nothing to fetch: it opens offline
    assert.is_nil(page:find("<link", 1, true))
    assert.is_nil(page:find("<img", 1, true))
    assert.is_nil(page:find("url%("))
    assert.is_nil(page:find("src=", 1, true))
    assert.matches("Thresholds: <span class=\"pass\">passed", page, 1, true)
    assert.matches("ESTATUS", page, 1, true)
    -- the same file again from the samples
    local _, rerr, rstatus = recipe("report --threshold 'failures<100%' " .. q(samples))
    assert.are.equal(0, rstatus, rerr)
    assert.are.equal(page, H.readfile(dir .. "/load.html")) -- the report's default name: load.jsonl -> load.html
    -- drawn: each series' colour covers far more pixels than its legend swatch (54)
    local png = dir .. "/shot.png"
    local ok = os.execute(("chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1040,1600 "
      .. "--screenshot=%s file://%s > /dev/null 2>&1"):format(q(png), html))
    assert.is_true(ok == true or ok == 0, "chromium")
    local colors = {}
    for k, c in pairs(REPORT_COLORS) do colors[k] = c:sub(2) end
    local failure_color = require("sshchain.report").CODE_COLORS[1]:sub(2)
    local counts = cjson.decode((H.sh(("python3 %s/spec/fixtures/png_colors.py %s %s %s %s %s %s %s %s"):format(
      H.root or ".", q(png), colors.logins, colors.commands, colors.p50, colors.p90, colors.p99, colors.sessions,
      failure_color))))
    assert.are.equal(1040, counts.width)
    for name, c in pairs(colors) do assert.is_true(counts[c] > 300, name .. " drawn: " .. counts[c]) end
    assert.is_true(counts[failure_color] > 300, "failure bars drawn: " .. counts[failure_color])
  end)
end)

describe("sharding", function()
  local function hosts_of(text)
    local set, list = {}, {}
    for _, r in ipairs(json_lines(text)) do
      assert.is_nil(set[r.host], r.host .. " twice")
      set[r.host] = r
      list[#list + 1] = r.host
    end
    return set, list
  end

  it("splits exec's hosts into N disjoint parts that cover all, N = 1..7; merge equals the unsharded run", function()
    local whole_text, err, status = recipe("exec -i " .. q(INV) .. " -q --json 'n*' -- 'echo $SSH_CONNECTION'")
    assert.are.equal(0, status, err)
    local whole = hosts_of(whole_text)
    local n_whole = 0
    for _ in pairs(whole) do n_whole = n_whole + 1 end
    assert.are.equal(16, n_whole)
    for n = 1, 7 do
      local files, seen = {}, {}
      for k = 1, n do
        local f = H.tmpname()
        files[k] = f
        local text, e, st = recipe(("exec -i %s -q --json --shard %d/%d 'n*' -- 'echo $SSH_CONNECTION'"):format(q(INV), k, n))
        assert.are.equal(0, st, e)
        H.writefile(f, text)
        local part = hosts_of(text)
        for h in pairs(part) do
          assert.is_nil(seen[h], ("%s in two parts of %d"):format(h, n))
          seen[h] = k
        end
      end
      local merged, merr, mst = recipe("merge " .. table.concat(files, " "))
      for _, f in ipairs(files) do os.remove(f) end
      assert.are.equal(0, mst, merr)
      local m, order = hosts_of(merged)
      local sorted = {}
      for i, h in ipairs(order) do sorted[i] = h end
      table.sort(sorted)
      assert.are.same(sorted, order) -- ordered by host
      for h, r in pairs(whole) do
        assert.is_truthy(m[h], ("%s missing from the merge of %d parts"):format(h, n))
        assert.are.same({ r.ok, r.address, r.port, r.stdout:match("%S+ %S+ (%S+)") },
          { m[h].ok, m[h].address, m[h].port, m[h].stdout:match("%S+ %S+ (%S+)") })
      end
      assert.are.equal(16, #order)
    end
  end)

  it("takes the part from a Kubernetes Indexed Job's or a Slurm array's environment", function()
    local _, list = hosts_of((recipe("exec -i " .. q(INV) .. " -q --json --shard 2/3 'n*' -- true")))
    local k8s_text, k8s_err = recipe("exec -i " .. q(INV) .. " --json 'n*' -- true",
      "JOB_COMPLETION_INDEX=1 SSHCHAIN_SHARDS=3")
    local _, k8s = hosts_of(k8s_text)
    table.sort(list)
    table.sort(k8s)
    assert.are.same(list, k8s)
    assert.matches("shard 2/3 (from JOB_COMPLETION_INDEX=1 and SSHCHAIN_SHARDS=3)", k8s_err, 1, true)
    local slurm_text = recipe("exec -i " .. q(INV) .. " -q --json 'n*' -- true",
      "SLURM_ARRAY_TASK_ID=12 SLURM_ARRAY_TASK_MIN=11 SLURM_ARRAY_TASK_COUNT=3")
    local _, slurm = hosts_of(slurm_text)
    table.sort(slurm)
    assert.are.same(list, slurm)
    -- an explicit --shard wins; 1/1 turns the environment off
    local _, all = hosts_of((recipe("exec -i " .. q(INV) .. " -q --json --shard 1/1 'n*' -- true",
      "JOB_COMPLETION_INDEX=1 SSHCHAIN_SHARDS=3")))
    assert.are.equal(16, #all)
    local _, e, st = recipe("exec -i " .. q(INV) .. " 'n*' -- true", "JOB_COMPLETION_INDEX=1")
    assert.are.equal(2, st)
    assert.matches("SSHCHAIN_SHARDS", e, 1, true)
  end)

  -- README's three ways to shard, run as written against the lab (the Kubernetes and Slurm
  -- commands with the lab's nodes and `uptime` for 'node*' and `ipmitool sdr`)
  local function readme_block(after, lang)
    local readme = assert(H.readfile((H.root or ".") .. "/README.md"))
    local at = assert(readme:find(after, 1, true), after)
    return assert(readme:match("```" .. lang .. "\n(.-)```", at))
  end
  local function whole_run()
    local whole = {}
    for _, r in ipairs(json_lines((recipe("exec -i " .. q(INV) .. " -q --json 'n*' -- uptime")))) do
      whole[#whole + 1] = r.host .. (r.ok and " ok" or " failed")
    end
    table.sort(whole)
    assert.are.equal(16, #whole)
    return whole
  end
  local function merged_run(path)
    local merged = {}
    for line in io.lines(path) do
      local r = cjson.decode(line)
      merged[#merged + 1] = r.host .. (r.ok and " ok" or " failed")
    end
    return merged
  end
  local function bash(dir, env, body)
    local script = ("set -e\ncd %s\n. %s\nexport SSHCHAIN_INVENTORY=%s PATH=%s:$PATH %s\n%s"):format(q(dir),
      q(H.lab.inventory_env), q(INV), q(H.build:sub(1, 1) == "/" and H.build or (H.root .. "/" .. H.build)), env, body)
    local ok = os.execute("bash -c " .. q(script) .. " < /dev/null > /dev/null 2>&1")
    assert.is_true(ok == true or ok == 0, body)
  end
  local function lab_words(cmd)
    return (cmd:gsub("'node%*'", "'n*'"):gsub("ipmitool sdr", "uptime"))
  end

  it("runs README's GNU parallel, Kubernetes Indexed Job and Slurm array blocks; each merge equals the whole", function()
    local dir = H.tmpname()
    assert(os.execute("mkdir -p " .. q(dir)))
    finally(function() os.execute("rm -rf " .. q(dir)) end)
    local whole = whole_run()
    -- GNU parallel: the block as it is
    bash(dir, "", readme_block("GNU parallel, on one machine", "sh"))
    assert.are.same(whole, merged_run(dir .. "/all.jsonl"))
    -- Kubernetes: the container's command, once per completion index
    local job = readme_block("A Kubernetes Indexed Job", "yaml")
    local completions = assert(job:match("completions: (%d+)"))
    assert.are.equal(completions, job:match('name: SSHCHAIN_SHARDS[^\n]*\n%s*value: "(%d+)"'))
    local cmd = lab_words(assert(job:match('command: %["sh", "%-c", "(.-)"%]')):gsub("/out/", q(dir) .. "/k8s-"))
    for i = 0, tonumber(completions) - 1 do
      bash(dir, ("JOB_COMPLETION_INDEX=%d SSHCHAIN_SHARDS=%s"):format(i, completions), cmd)
    end
    bash(dir, "", "sshlua -r merge k8s-sdr-*.jsonl > k8s.jsonl")
    assert.are.same(whole, merged_run(dir .. "/k8s.jsonl"))
    -- Slurm: the script's commands, once per array task
    local batch = readme_block("A Slurm job array", "sh")
    local lo, hi = batch:match("%-%-array=(%d+)%-(%d+)")
    local body = {}
    for line in batch:gmatch("[^\n]+") do
      if not line:match("^#") and not line:match("^export SSHCHAIN_INVENTORY") then body[#body + 1] = lab_words(line) end
    end
    for id = tonumber(lo), tonumber(hi) do
      bash(dir, ("SLURM_ARRAY_TASK_ID=%d SLURM_ARRAY_TASK_MIN=%s SLURM_ARRAY_TASK_COUNT=%d"):format(id, lo, hi - lo + 1),
        table.concat(body, "\n"))
    end
    bash(dir, "", "sshlua -r merge parts/sdr-*.jsonl > slurm.jsonl")
    assert.are.same(whole, merged_run(dir .. "/slurm.jsonl"))
  end)

  it("splits copy --to's hosts and tree's hosts the same way, with the same row keys", function()
    local dir = H.tmpname()
    assert(os.execute("mkdir -p " .. q(dir)))
    finally(function() os.execute("rm -rf " .. q(dir)) end)
    H.writefile(dir .. "/shard.txt", "part\n")
    local seen = {}
    for k = 1, 3 do
      local text, err, status = recipe(("copy -i %s -q --json --shard %d/3 --to 'n0[1-7]' -- %s/shard.txt /tmp/")
        :format(q(INV), k, q(dir)))
      assert.are.equal(0, status, err)
      for _, r in ipairs(json_lines(text)) do
        assert.is_nil(seen[r.host], r.host)
        seen[r.host] = true
        assert.are.same({ true, r.dst_host, cjson.null, cjson.null, 22 }, { r.ok, r.host, r.code, r.error, r.port })
        assert.matches("^10%.231%.3%.10%d$", r.address)
        assert.is_true(r.seconds > 0)
      end
    end
    local all = {}
    for h in pairs(seen) do all[#all + 1] = h end
    table.sort(all)
    assert.are.same({ "n01", "n02", "n03", "n04", "n05", "n06", "n07" }, all)
    -- tree: each part probes the jump hosts above its hosts; merge keeps one row of each
    local files = {}
    for k = 1, 2 do
      files[k] = ("%s/tree%d.jsonl"):format(dir, k)
      local text, err, status = recipe(("tree -i %s --json --shard %d/2 'n0[1-5]'"):format(q(INV), k))
      assert.are.equal(0, status, err)
      H.writefile(files[k], text)
    end
    local merged, merr, mstatus = recipe("merge " .. table.concat(files, " "))
    assert.are.equal(0, mstatus, merr)
    assert.is_nil(merr:find("overlap", 1, true))
    local names = {}
    for _, r in ipairs(json_lines(merged)) do
      names[#names + 1] = r.host
      assert.are.equal(r.name, r.host)
      assert.is_string(r.address)
    end
    assert.are.same({ "j1", "j2", "n01", "n02", "n03", "n04", "n05" }, names)
  end)

  it("splits stress users over shards; merge recomputes the run from every shard's samples", function()
    local dir = H.tmpname()
    assert(os.execute("mkdir -p " .. q(dir)))
    finally(function() os.execute("rm -rf " .. q(dir)) end)
    local files, users, commands = {}, 0, 0
    for k = 1, 3 do
      files[k] = ("%s/s%d.jsonl"):format(dir, k)
      local text, err, status = recipe(stress .. ("--users 7 --repeat 2 --shard %d/3 --json --out %s 'n0[1-3]' -- true")
        :format(k, q(files[k])))
      assert.are.equal(0, status, err)
      local f = cjson.decode(text)
      assert.are.equal(k .. "/3", f.shard)
      users, commands = users + f.users, commands + f.commands
    end
    assert.are.same({ 7, 14 }, { users, commands }) -- 3 + 2 + 2 users, each 2 rounds
    local text, err, status = recipe("merge --json " .. table.concat(files, " "))
    assert.are.equal(0, status, err)
    local m = cjson.decode(text)
    assert.are.same({ 7, 7, 14, 14, 0 }, { m.users, m.sessions, m.commands, m.commands_ok, m.failures })
    assert.are.equal(cjson.null, m.shard)
    -- bad input: a file cut in the middle of a line, and one cut at a line's end
    local whole = assert(H.readfile(files[1]))
    local cut = dir .. "/cut.jsonl"
    H.writefile(cut, whole:sub(1, #whole - 20))
    local _, e1, s1 = recipe("merge " .. q(cut))
    assert.are.equal(2, s1)
    local nlines = select(2, whole:gsub("\n", ""))
    assert.matches(("cut.jsonl: line %d: not a JSON object"):format(nlines), e1, 1, true)
    H.writefile(cut, (whole:gsub("[^\n]*\n$", "")))
    local _, e2, s2 = recipe("report " .. q(cut))
    assert.are.equal(2, s2)
    assert.matches(("ends at line %d without the run's end record"):format(nlines - 1), e2, 1, true)
  end)
end)

describe("inventories at scale", function()
  it("runs exec over 1,000 hosts mapped onto the lab's 16 nodes with no failure, memory bounded", function()
    local inv = H.tmpname() .. ".lua"
    finally(function() os.remove(inv) end)
    assert(os.execute(("lua5.4 %s/scripts/bench/many_hosts.lua %s 1000 %s"):format(H.root or ".", q(INV), q(inv))))
    local out = H.tmpname()
    finally(function() os.remove(out) end)
    local py = ([[
import resource, subprocess, sys
with open(%q, "w") as out:
    rc = subprocess.call(["sh", "-c", ". %s; exec %s/sshlua -r exec -i %s -n -q --json --limit 64 'h*' -- true"],
                         stdout=out, stdin=subprocess.DEVNULL)
print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
]]):format(out, H.lab.inventory_env, H.build, inv)
    local rc, kib = H.sh("python3 -c " .. q(py)):match("(%d+) (%d+)")
    assert.are.equal("0", rc)
    local n, ok = 0, 0
    for line in io.lines(out) do
      local r = cjson.decode(line)
      n = n + 1
      if r.ok then ok = ok + 1 end
    end
    assert.are.same({ 1000, 1000 }, { n, ok })
    -- (under AddressSanitizer, SSHCHAIN_RUNNER set, its allocator and shadow memory add to it)
    local bound = os.getenv("SSHCHAIN_RUNNER") and 256 or 64
    assert.is_true(tonumber(kib) < bound * 1024, "peak RSS " .. kib .. " KiB")
  end)
end)
