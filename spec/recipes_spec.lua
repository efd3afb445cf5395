-- recipes_spec: the bundled recipes run as a user runs them (sshlua -r NAME ...), against the lab
-- through its jump hosts, with the lab's Lua inventory (secrets from its inventory.env) or its
-- ssh_config; and the inventory module they rest on.
local sshchain = require "sshchain"
local H = require "helper"
local cjson = require "cjson"

local q = sshchain.shell_quote
local INV = H.lab.inventory

--- Runs `sshlua -r ARGS` with the lab's secrets in the environment; returns stdout, stderr, status.
--- Runs `sshlua -r args` with the lab's secrets in the environment: stdout, stderr, exit status.
--- stdin: a shell redirection or pipeline prefix for its standard input (default: </dev/null,
--- since the exec recipe forwards a standard input that is not a terminal).
local function recipe(args, env, stdin)
  local out, err = H.tmpname(), H.tmpname()
  local feed, redirect = "", "< /dev/null"
  if stdin and stdin:sub(-1) == "|" then feed, redirect = stdin, "" elseif stdin then redirect = stdin end
  local cmd = (". %s; %s %s %s/sshlua -r %s %s > %s 2> %s"):format(q(H.lab.inventory_env), feed, env or "",
    H.build, args, redirect, out, err)
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

local function by(list, key)
  local t = {}
  for _, o in ipairs(list) do t[o[key]] = o end
  return t
end

describe("sshlua -r", function()
  it("lists the recipes with one line each, and refuses an unknown one", function()
    local out, _, status = recipe("")
    assert.are.equal(0, status)
    for _, name in ipairs { "exec", "stress", "copy", "forward", "tree", "merge", "report" } do
      assert.matches("\n  " .. name .. " +%a", out)
    end
    local _, err, st2 = recipe("nosuch")
    assert.are.equal(2, st2)
    assert.matches('no recipe "nosuch"', err, 1, true)
  end)

  it("gives every recipe a manual-style --help, and exit 2 on a bad command line", function()
    for _, name in ipairs { "exec", "stress", "copy", "forward", "tree", "merge", "report" } do
      local out, _, status = recipe(name .. " --help")
      assert.are.equal(0, status, name)
      for _, section in ipairs { "Usage: sshlua %-r " .. name, "Options:", "Examples:", "Exit status:" } do
        assert.matches(section, out)
      end
      local _, err, st = recipe(name .. " --no-such-option")
      assert.are.equal(2, st, name)
      assert.matches("Error:", err, 1, true)
    end
  end)
end)

describe("recipe exec", function()
  it("runs a command on a group and a host through the jumps, as a table", function()
    local out, err, status = recipe("exec -i " .. q(INV) .. " targets j1 -- 'echo $(whoami)'")
    assert.are.equal(0, status, err)
    for _, h in ipairs { "t1", "t2", "t3", "t4", "j1" } do
      assert.matches("\n" .. h .. " +ok +[%d.]+s +scl" .. h .. "\n", out)
    end
    assert.matches("5 hosts: 5 ok, 0 failed", err, 1, true)
  end)

  it("prints one JSON object per host, and exits 1 naming each failure", function()
    local inv = H.tmpname() .. ".lua"
    finally(function() os.remove(inv) end)
    H.writefile(inv, ([[
      local lab = dofile(%q)
      return { defaults = { known_hosts = lab.known_hosts, timeout = 5 },
        hosts = { j1 = lab.j1, j2 = { host = lab.j2.host, port = lab.j2.port, user = lab.j2.user,
                    identity = lab.j2.identity, via = "j1" },
                  t4 = { host = lab.t4.host, user = lab.t4.user, identity = lab.t4.identity, via = "j2" },
                  down = { host = "10.231.3.99", user = "nobody", identity = lab.t4.identity, via = "j2" },
                  wrongkey = { host = lab.t3.host, user = lab.t3.user, identity = lab.keys.other, via = "j2" } } }
    ]]):format(H.lab.dir .. "/lab.lua"))
    local out, err, status = recipe("exec -i " .. q(inv) .. " --json t4 down wrongkey -- 'echo hi; exit 3'")
    assert.are.equal(1, status, err)
    local r = by(json_lines(out), "host")
    assert.are.same({ "hi\n", 3 }, { r.t4.stdout, r.t4.status })
    assert.are.equal("ECHANNEL", r.down.code, r.down.error)
    assert.matches("hop 3", r.down.error, 1, true)
    assert.are.equal("EAUTH", r.wrongkey.code)
    assert.matches("3 hosts: 0 ok, 3 failed (2 unreachable)", err, 1, true)
  end)

  it("prefixes lines with their host, selects with glob patterns, and reads ssh_config", function()
    local out, _, status = recipe("exec -i " .. q(INV) .. " --lines 'n0[1-3]' -- 'echo one; echo two'")
    assert.are.equal(0, status)
    for _, h in ipairs { "n01", "n02", "n03" } do
      assert.matches(h .. ": one\n", out, 1, true)
      assert.matches(h .. ": two\n", out, 1, true)
    end
    assert.is_nil(out:find("n04", 1, true))
    local out2, err2, st2 = recipe("exec -i " .. q(H.lab.ssh_config) .. " --json 'n1?' t4 -- whoami")
    assert.are.equal(0, st2, err2)
    local r = json_lines(out2)
    assert.are.equal(8, #r) -- n10..n16 and t4
    for _, o in ipairs(r) do assert.matches("^scl", o.stdout) end
  end)

  it("explains a selector that matches nothing, a missing command and a missing secret (exit 2 / 1)", function()
    local _, err, status = recipe("exec -i " .. q(INV) .. " nosuchhost -- true")
    assert.are.equal(2, status)
    assert.matches('no host or group matches "nosuchhost"', err, 1, true)
    _, err, status = recipe("exec -i " .. q(INV) .. " t1")
    assert.are.equal(2, status)
    assert.matches("no command", err, 1, true)
    _, err, status = recipe("exec -i " .. q(INV) .. " t2 -- true", "env -u SCL_T2_PASSWORD")
    assert.are.equal(2, status)
    assert.matches("SCL_T2_PASSWORD", err, 1, true)
  end)
end)

describe("recipe exec, devices and standard input", function()
  it("types commands on a device that only speaks a shell: pages answered, no prompt or echo", function()
    local out, err, status = recipe("exec -i " .. q(INV) .. " --shell --json bmc -- 'show sensors\npower status'")
    assert.are.equal(0, status, err)
    local r = json_lines(out)[1]
    assert.are.equal("bmc", r.host)
    local n = 0
    for line in r.stdout:gmatch("[^\n]+") do
      if line:match("^Sensor %d%d |") then n = n + 1 end
    end
    assert.are.equal(34, n, r.stdout)
    assert.matches("\nChassis Power is on\n$", r.stdout)
    assert.is_nil(r.stdout:find("More", 1, true), r.stdout)
    assert.is_nil(r.stdout:find("bmc>", 1, true), r.stdout)
    assert.is_nil(r.stdout:find("show sensors", 1, true), r.stdout)
  end)

  it("says the device refuses exec, and times out on a prompt that never comes (exit 1)", function()
    local out, err, status = recipe("exec -i " .. q(INV) .. " --json bmc -- 'show sensors'")
    assert.are.equal(1, status, err)
    local r = json_lines(out)[1]
    assert.are.equal(1, r.status)
    assert.matches("command execution is not supported", r.stderr, 1, true)
    out, err, status = recipe("exec -i " .. q(INV) .. " --shell --json -t 2 --prompt 'switch# ' bmc -- help")
    assert.are.equal(1, status, err)
    r = json_lines(out)[1]
    assert.are.equal("ETIMEDOUT", r.code, r.error)
    assert.matches("bmc> ", r.error, 1, true) -- the last output, so that the right --prompt can be seen
  end)

  it("gives standard input to the command: streamed to one host, whole to several, none with -n", function()
    local out, err, status = recipe("exec -i " .. q(INV) .. " --json t1 -- 'cat; echo end'", nil,
      "printf 'one\ntwo\n' |")
    assert.are.equal(0, status, err)
    assert.are.equal("one\ntwo\nend\n", json_lines(out)[1].stdout)
    out, err, status = recipe("exec -i " .. q(INV) .. " --json t1 t3 -- 'wc -c'", nil, "printf abc |")
    assert.are.equal(0, status, err)
    local r = by(json_lines(out), "host")
    assert.are.equal("3", r.t1.stdout:match("%d+"))
    assert.are.equal("3", r.t3.stdout:match("%d+"))
    out, err, status = recipe("exec -i " .. q(INV) .. " --json -n t1 -- 'wc -c'", nil, "printf abc |")
    assert.are.equal(0, status, err)
    assert.are.equal("0", json_lines(out)[1].stdout:match("%d+"))
  end)
end)

describe("recipe tree", function()
  it("draws the jump tree and probes every hop: auth method, host key, times", function()
    local out, err, status = recipe("tree -i " .. q(INV) .. " --json targets")
    assert.are.equal(0, status, err)
    local nodes = by(json_lines(out), "name")
    assert.are.same({ 0, 1, 2 }, { nodes.j1.depth, nodes.j2.depth, nodes.t1.depth })
    assert.are.equal("j2", nodes.t4.parent)
    assert.are.equal("password", nodes.j1.auth)
    assert.are.equal("publickey", nodes.t1.auth)
    assert.are.equal(H.lab.kbdint and "keyboard-interactive" or "password", nodes.t2.auth)
    for _, n in pairs(nodes) do
      assert.is_true(n.ok)
      assert.matches("^ssh%-ed25519 SHA256:", n.host_key)
      assert.is_true(n.total_ms > 0)
    end
    local text = recipe("tree -i " .. q(INV) .. " t1 t2")
    assert.matches("j1 .*\n└─ j2 .*\n   ├─ t1 .*\n   └─ t2 ", text)
  end)

  it("reports an unreachable hop and does not probe below it (exit 1)", function()
    local inv = H.tmpname() .. ".lua"
    finally(function() os.remove(inv) end)
    H.writefile(inv, ([[
      local lab = dofile(%q)
      return { defaults = { known_hosts = lab.known_hosts, timeout = 3 },
        hosts = { j1 = lab.j1, nofwd = { host = lab.j2nofwd.host, port = lab.j2nofwd.port,
                    user = lab.j2nofwd.user, identity = lab.j2nofwd.identity, via = "j1" },
                  t1 = { host = lab.t1.host, user = "x", identity = lab.keys.other, via = "nofwd" } } }
    ]]):format(H.lab.dir .. "/lab.lua"))
    local out, _, status = recipe("tree -i " .. q(inv) .. " --json t1")
    assert.are.equal(1, status)
    local nodes = by(json_lines(out), "name")
    assert.is_true(nodes.nofwd.ok)
    assert.are.equal("ECHANNEL", nodes.t1.code)
  end)
end)

describe("recipe copy", function()
  local dir
  before_each(function()
    dir = H.tmpname()
    assert(os.execute("mkdir -p " .. dir))
  end)
  after_each(function() os.execute("rm -rf " .. q(dir)) end)

  it("uploads, copies between servers and downloads back, verified", function()
    H.sh("head -c 700000 /dev/urandom > " .. dir .. "/f.bin")
    local sum = H.sh("sha256sum < " .. dir .. "/f.bin")
    local _, err, status = recipe(("copy -i %s --verify %s/f.bin t4:/home/sclt4/recipe-f.bin"):format(q(INV), dir))
    assert.are.equal(0, status, err)
    assert.matches("1 of 1 copies done: 1 files, 683.6 KiB", err, 1, true)
    assert.matches("1 files verified", err, 1, true)
    _, err, status = recipe(("copy -i %s --verify --sftp t4:/home/sclt4/recipe-f.bin t3:/home/sclt3/"):format(q(INV)))
    assert.are.equal(0, status, err)
    _, err, status = recipe(("copy -i %s t3:/home/sclt3/recipe-f.bin %s/back.bin"):format(q(INV), dir))
    assert.are.equal(0, status, err)
    assert.are.equal(sum, H.sh("sha256sum < " .. dir .. "/back.bin"))
    assert.is_nil(err:find("\r", 1, true)) -- no progress bar when stderr is not a terminal
  end)

  it("moves the same bytes with libssh's own 4 KiB reads (SSHCHAIN_NO_READAHEAD=1)", function()
    H.sh("head -c 3000000 /dev/urandom > " .. dir .. "/f.bin")
    local sum = H.sh("sha256sum < " .. dir .. "/f.bin")
    for _, proto in ipairs { "", "--sftp " } do
      local _, err, status = recipe(("copy -i %s %s%s/f.bin t4:/home/sclt4/recipe-ra.bin"):format(q(INV), proto, dir),
        "SSHCHAIN_NO_READAHEAD=1")
      assert.are.equal(0, status, err)
      os.remove(dir .. "/back.bin")
      _, err, status = recipe(("copy -i %s %st4:/home/sclt4/recipe-ra.bin %s/back.bin"):format(q(INV), proto, dir),
        "SSHCHAIN_NO_READAHEAD=1")
      assert.are.equal(0, status, err)
      assert.are.equal(sum, H.sh("sha256sum < " .. dir .. "/back.bin"))
    end
  end)

  it("fans one file out to a group, and reports each destination that failed", function()
    H.writefile(dir .. "/fan.txt", "to every node\n")
    local out, err, status = recipe(("copy -i %s --json --to nodes t4 -- %s/fan.txt /home/sclnode/"):format(q(INV), dir))
    assert.are.equal(1, status, err) -- t4's user cannot write into /home/sclnode
    local r = json_lines(out)
    assert.are.equal(17, #r)
    local ok = 0
    for _, o in ipairs(r) do if o.ok then ok = ok + 1 end end
    assert.are.equal(16, ok)
    assert.matches("fan.txt %-> t4:/home/sclnode/: EIO: hop 3 sclt4@", err)
    assert.are.equal("to every node\n", H.readfile("/home/sclnode/fan.txt")) -- the lab's hosts share a filesystem
    os.remove("/home/sclnode/fan.txt")
  end)

  it("refuses local-to-local and names a missing remote file (exit 2 / 1)", function()
    local _, err, status = recipe(("copy -i %s %s/a %s/b"):format(q(INV), dir, dir))
    assert.are.equal(2, status)
    assert.matches("use cp", err, 1, true)
    _, err, status = recipe(("copy -i %s t4:/no/such/file %s/"):format(q(INV), dir))
    assert.are.equal(1, status)
    assert.matches("/no/such/file", err, 1, true)
    assert.are.same("", H.sh("ls -A " .. dir))
  end)
end)

describe("recipe forward", function()
  it("forwards several web interfaces and a SOCKS proxy, served until --for ends", function()
    local out = H.tmpname()
    finally(function() os.remove(out) end)
    os.execute((". %s; %s/sshlua -r forward -i %s --json --socks 0 --for 4 t1:8080 t2:8080 > %s 2>&1 &")
      :format(q(H.lab.inventory_env), H.build, q(INV), out))
    local lines
    for _ = 1, 60 do
      local text = H.readfile(out) or ""
      if text:find("serving", 1, true) then lines = text break end
      os.execute("sleep 0.1")
    end
    assert.is_truthy(lines, H.readfile(out))
    local fw = {}
    for line in lines:gmatch("{[^\n]+}") do
      local o = cjson.decode(line)
      fw[o.forward] = o["local"]
    end
    assert.are.equal("sshchain lab t1\n", H.sh("curl -s --max-time 5 " .. fw["t1:8080"] .. "index.html"))
    assert.are.equal("sshchain lab t2\n", H.sh("curl -s --max-time 5 " .. fw["t2:8080"] .. "index.html"))
    local socks = fw.SOCKS5:match(":(%d+)$")
    assert.are.equal("sshchain lab t3\n",
      H.sh("curl -s --max-time 5 --socks5-hostname 127.0.0.1:" .. socks .. " http://10.231.3.13:8080/index.html"))
    local text
    for _ = 1, 80 do
      text = H.readfile(out) or ""
      if text:find("stopped", 1, true) then break end
      os.execute("sleep 0.1")
    end
    assert.matches("stopped; 3 connection%(s%) served", text)
  end)
end)

describe("recipe stress", function()
  it("logs in many users, runs the command list, and reports figures as JSON", function()
    local out, err, status = recipe("stress -i " .. q(INV) .. " --users 30 --repeat 2 --barrier --json t4 -- true")
    assert.are.equal(0, status, err)
    local f = cjson.decode(out)
    assert.are.same({ 30, 0, 30, 60, 60, 0 },
      { f.sessions, f.sessions_failed, f.peak_sessions, f.commands, f.commands_ok, f.failures })
    for _, k in ipairs { "p50_ms", "p90_ms", "p99_ms", "max_ms", "logins_p50_ms" } do
      assert.is_true(type(f[k]) == "number" and f[k] >= 0, k)
    end
    assert.is_true(f.p50_ms <= f.p90_ms and f.p90_ms <= f.p99_ms and f.p99_ms <= f.max_ms)
  end)

  it("spreads users over a group, counts failures by CODE and exits 1", function()
    local out, _, status = recipe("stress -i " .. q(INV) .. " --users 8 --json -c true -c false 'n0[1-4]'")
    assert.are.equal(1, status)
    local f = cjson.decode(out)
    assert.are.same({ 4, 8, 16, 8 }, { f.hosts, f.sessions, f.commands, f.failures_by_code.ESTATUS })
  end)

  it("paces commands at --rate (rate-limited) and prints a table", function()
    local t0 = sshchain.core.now()
    local out, err, status = recipe("stress -i " .. q(INV) .. " --users 5 --repeat 4 --rate 20 t3 -- true")
    assert.are.equal(0, status, err)
    assert.matches("rate-limited, 20 commands/s", out, 1, true)
    assert.matches("\ncommands +20 +0 ", out)
    assert.is_true(sshchain.core.now() - t0 >= 19 / 20) -- 20 commands at 20/s span at least 0.95 s
  end)
end)

describe("inventory", function()
  local inventory = require "sshchain.inventory"

  it("selects hosts by name, group, nested group and glob, in order, without duplicates", function()
    local inv = assert(inventory.from_table({
      hosts = { a1 = { host = "10.0.0.1" }, a2 = { host = "10.0.0.2" }, b1 = { host = "10.0.1.1" },
        gw = { host = "10.9.9.9" } },
      groups = { as = { "a*" }, all = { "as", "b1", "gw" } },
    }, "test"))
    assert.are.same({ "a1", "a2", "b1", "gw" }, inv:select { "all" })
    assert.are.same({ "gw", "a1", "a2" }, inv:select { "gw", "as", "a1" })
    assert.are.same({ "a2" }, inv:select { "a[2-9]" })
    local none, err = inv:select { "c*" }
    assert.is_nil(none)
    assert.matches('"c%*"', err)
  end)

  it("builds chains through via (nested, and lists), with defaults, and refuses loops", function()
    local inv = assert(inventory.from_table({
      defaults = { user = "ops", timeout = 7 },
      hosts = { gw = { host = "g" }, mid = { host = "m", via = "gw" }, other = { host = "o" },
        node = { host = "n", user = "root", via = { "mid", "other" } },
        loop1 = { host = "l1", via = "loop2" }, loop2 = { host = "l2", via = "loop1" } },
    }, "test"))
    local c = assert(inv:chain("node"))
    local hosts = {}
    for i, s in ipairs(c) do hosts[i] = s.host .. "/" .. s.user end
    assert.are.same({ "g/ops", "m/ops", "o/ops", "n/root" }, hosts)
    assert.are.equal(7, c[4].timeout)
    local none, err = inv:chain("loop1")
    assert.is_nil(none)
    assert.matches("loop", err)
  end)

  it("reads secrets from the environment, lazily, and refuses a prompt without a terminal", function()
    local path = H.tmpname()
    finally(function() os.remove(path) end)
    H.writefile(path, [[
      return { hosts = { a = { host = "a", password = env "SSHCHAIN_SPEC_UNSET_VAR" },
                         b = { host = "b", password = env "HOME" },
                         c = { host = "c", password = prompt "password of c" } } }
    ]])
    local inv = assert(inventory.load(path))
    assert.are.equal(os.getenv("HOME"), assert(inv:chain("b"))[1].password)
    local none, err = inv:chain("a")
    assert.is_nil(none)
    assert.matches("SSHCHAIN_SPEC_UNSET_VAR", err, 1, true)
    -- without a controlling terminal (setsid), a prompt fails clearly instead of waiting
    local code = ("require 'sshchain'; local inv = require('sshchain.inventory').load(%q); "
      .. "local c, e = inv:chain('c'); io.write(tostring(e))"):format(path)
    local out = H.sh("setsid " .. H.build .. "/sshlua -e " .. q(code) .. " </dev/null 2>&1")
    assert.matches("needs a terminal", out, 1, true)
  end)

  it("reads an ssh_config file: Host names are the hosts, ProxyJump the chain", function()
    local inv = assert(inventory.load(H.lab.ssh_config))
    assert.are.same({ "t1", "t2", "t3", "t4" }, inv:select { "t?" })
    local c = assert(inv:chain("t1"))
    assert.are.same({ "10.231.1.2", "10.231.2.2", "10.231.3.11" }, { c[1].host, c[2].host, c[3].host })
  end)
end)
