-- Surviving the network (issue 16): sessions that come back after a hop's process is killed,
-- forwards that keep their port and serve again, retries that try the network's failures again
-- and never EAUTH, and the recipes' --retries and keepalive. Faults are made on the lab's own
-- processes only: the per-connection sshd of a lab user is killed, a lab listener is stopped
-- (SIGSTOP) and continued.
local sshchain = require "sshchain"
local H = require "helper"

local NODE = 6 -- a node no other spec of this file uses while it is broken
local function node_spec(over)
  local s = { known_hosts = H.lab.known_hosts, timeout = 5 }
  for k, v in pairs(H.lab.nodes[NODE]) do s[k] = v end
  for k, v in pairs(over or {}) do s[k] = v end
  return s
end
local function node_chain(over) return { H.spec("j1"), H.spec("j2"), node_spec(over) } end
local NODE_NS = "scl-" .. H.lab.nodes[NODE].name

--- Kills the per-connection sshd processes of a lab user in a namespace (the listener stays).
local function kill_sessions(ns, user, sig)
  os.execute(("ip netns exec %s pkill -%s -f '^sshd: %s' 2>/dev/null"):format(ns, sig or "KILL", user))
end

local function listener_pid(name) return H.readfile(H.lab.dir .. "/run/" .. name .. ".pid"):match("%d+") end

local function nfds()
  collectgarbage()
  collectgarbage()
  sshchain.sleep(0.1) -- closed handles finish closing
  local n = 0
  local pid = H.readfile("/proc/self/stat"):match("^%d+")
  for _ in io.popen("ls /proc/" .. pid .. "/fd"):lines() do n = n + 1 end
  return n
end

--- Serves the loop until pred() holds or max seconds pass; whether it held.
local function until_(pred, max)
  local deadline = sshchain.core.now() + max
  while not pred() do
    if sshchain.core.now() > deadline then return false end
    sshchain.sleep(0.02)
  end
  return true
end

local http = H.lab.http.t1 -- "10.231.3.11:8080", reachable from the nodes' bridge
local http_host, http_port = http:match("^(.-):(%d+)$")
local function curl(port) return ("curl -sS -m 10 -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/index.html"):format(port) end

describe("reconnect", function()
  after_each(function()
    os.execute("kill -CONT " .. listener_pid(H.lab.nodes[NODE].name) .. " 2>/dev/null")
  end)

  it("a session with reconnect fails the call in flight with ECLOSED naming the hop, and the next call rebuilds the chain", function()
    local events = {}
    local s = assert(sshchain.connect(node_chain(), { reconnect = { backoff = 0.05 },
      on_event = function(what, data) events[#events + 1] = { what, data } end }))
    assert.are.equal("1", assert(s:exec("echo 1")).stdout:match("%d"))
    local t = sshchain.spawn(function() return s:exec("sleep 30") end)
    sshchain.sleep(0.3)
    kill_sessions(NODE_NS, "sclnode")
    local r, msg, code, err = t:wait()
    H.failed({ code = "ECLOSED", hop = 3 }, r, msg, code, err)
    assert.are.same({}, events, "nothing is rebuilt before a call asks")
    local x = assert(s:exec("echo back"))
    assert.are.equal("back\n", x.stdout)
    assert.are.same({ "lost", "reconnecting", "restored" }, { events[1][1], events[2][1], events[3][1] })
    assert.are.equal(3, events[1][2].hop)
    assert.is_true(events[3][2].seconds < 5)
    s:close()
    H.assert_no_leaks(sshchain)
  end)

  it("comes back after a jump host's process is killed, through the same shared jump hosts", function()
    local s = assert(sshchain.connect(node_chain(), { reconnect = { backoff = 0.05 } }))
    local other = assert(sshchain.connect({ H.spec("j1"), H.spec("j2"), H.spec("t1") }))
    assert(s:exec("true"))
    kill_sessions("scl-j2", "sclj2")
    assert.is_true(until_(function() return s:state() == "failed" end, 10), "the loss is seen")
    local x = assert(s:exec("echo via"))
    assert.are.equal("via\n", x.stdout)
    -- the other chain, rebuilt, rides the same new jump sessions (one connection to each)
    local other2 = assert(sshchain.connect({ H.spec("j1"), H.spec("j2"), H.spec("t1") }))
    assert.are.equal(s._owned[2], other2._owned[2])
    assert(other2:exec("true"))
    other:close()
    other2:close()
    s:close()
    H.assert_no_leaks(sshchain)
  end)

  it("gives up after max_wait when the hop stays away, with the hop's failure", function()
    local s = assert(sshchain.connect(node_chain({ timeout = 0.5 }), { reconnect = { backoff = 0.1, max_wait = 1.5 } }))
    assert(s:exec("true"))
    os.execute("kill -STOP " .. listener_pid(H.lab.nodes[NODE].name))
    kill_sessions(NODE_NS, "sclnode")
    assert.is_true(until_(function() return s:state() == "failed" end, 10))
    local t0 = sshchain.core.now()
    local r, msg, code, err = s:exec("true")
    local took = sshchain.core.now() - t0
    H.failed({ code = "ETIMEDOUT", hop = 3 }, r, msg, code, err)
    assert.is_true(took >= 1.0 and took < 4, ("gave up after %.2f s"):format(took))
    os.execute("kill -CONT " .. listener_pid(H.lab.nodes[NODE].name))
    assert(s:exec("true"), "a later call tries again")
    s:close()
    H.assert_no_leaks(sshchain)
  end)

  it("never retries EAUTH or EHOSTKEY, and retries a handshake that timed out", function()
    local res = sshchain.parallel({ "auth", "hostkey" }, function(which)
      if which == "auth" then return sshchain.connect({ H.spec("j1"), H.spec("j2", { password = "wrong", identity = {} }) }) end
      return sshchain.connect(H.spec("j1", { known_hosts = H.lab.known_hosts_bad }))
    end, { retries = { count = 3, backoff = 0.01 } })
    assert.are.equal("EAUTH", res[1].code)
    assert.are.equal(1, res[1].attempts)
    assert.are.equal("EHOSTKEY", res[2].code)
    assert.are.equal(1, res[2].attempts)
    -- a stopped listener: the first attempts time out, the one after SIGCONT gets in
    local pid = listener_pid(H.lab.nodes[NODE].name)
    os.execute("kill -STOP " .. pid)
    local heard = {}
    local cont = sshchain.spawn(function()
      sshchain.sleep(1.2)
      os.execute("kill -CONT " .. pid)
    end)
    local r = sshchain.parallel({ 1 }, function()
      local s, msg, code, err = sshchain.connect(node_chain({ timeout = 0.5 }))
      if not s then return nil, msg, code, err end
      s:close()
      return "in"
    end, { retries = { count = 6, backoff = 0.2, max_backoff = 0.4 },
      on_retry = function(_, _, n, f) heard[#heard + 1] = { n, f.code, f.hop } end })
    cont:wait()
    assert.are.equal("in", r[1].value, r[1].err)
    assert.is_true(r[1].attempts >= 2)
    assert.are.same({ 1, "ETIMEDOUT", 3 }, heard[1])
    H.assert_no_leaks(sshchain)
  end)

  it("a forward with reconnect keeps its port and serves again after its target's process is killed, without fd growth", function()
    local events = {}
    local s = assert(sshchain.connect(node_chain()))
    local f = assert(s:forward { to_host = http_host, to_port = tonumber(http_port), reconnect = { backoff = 0.05 },
      on_event = function(what, data) events[#events + 1] = what .. (data.attempt and (" " .. data.attempt) or "") end })
    local port = f.port
    assert.are.same({ "200", 0 }, { H.bg(sshchain, curl(port)) })
    local fds, flaps, worst, seen = nil, 8, 0, {}
    for i = 1, flaps do
      kill_sessions(NODE_NS, "sclnode")
      assert.is_true(until_(function() return f.restores == i end, 15), "restored after flap " .. i)
      worst = math.max(worst, f.restored_in)
      local out, rc = H.bg(sshchain, curl(port))
      assert.are.same({ "200", 0 }, { out, rc }, "flap " .. i)
      assert.are.equal(port, f.port)
      seen[i] = nfds()
      if i == 2 then fds = seen[i] end
    end
    assert.are.equal(fds, nfds(), "file descriptors after 8 flaps: " .. table.concat(seen, " "))
    assert.are.same({ "lost", "reconnecting 1", "restored 1" }, { events[1], events[2], events[3] })
    assert.is_true(worst < 5, ("restored in %.2f s at worst"):format(worst))
    assert.is_true(f:stats().accepted >= flaps + 1)
    f:close()
    s:close()
    f = nil -- luacheck: ignore
    H.assert_no_leaks(sshchain)
  end)

  it("while it is rebuilt, new clients wait and are served, and past hold they are refused cleanly", function()
    local s = assert(sshchain.connect(node_chain({ timeout = 0.5 })))
    local f = assert(s:forward { to_host = http_host, to_port = tonumber(http_port), reconnect = { backoff = 0.2,
      max_backoff = 0.3, hold = 1 } })
    local pid = listener_pid(H.lab.nodes[NODE].name)
    os.execute("kill -STOP " .. pid)
    kill_sessions(NODE_NS, "sclnode")
    assert.is_true(until_(function() return f.lost ~= nil end, 10))
    -- the listener is stopped: past `hold`, a client is refused at once, not left hanging
    sshchain.sleep(1.3)
    local t0 = sshchain.core.now()
    local _, rc = H.bg(sshchain, curl(f.port))
    assert.are_not.equal(0, rc)
    assert.is_true(sshchain.core.now() - t0 < 3)
    assert.is_true(f:stats().refused >= 1)
    assert.is_true(f:is_open(), "the port is kept")
    -- a client that comes while it is rebuilt (within hold) waits and is served
    os.execute("kill -CONT " .. pid)
    assert.is_true(until_(function() return f.restores == 1 end, 10))
    assert.are.same({ "200", 0 }, { H.bg(sshchain, curl(f.port)) })
    f:close()
    s:close()
    f = nil -- luacheck: ignore
    H.assert_no_leaks(sshchain)
  end)

  it("refuses nonsense reconnect values", function()
    local s = assert(sshchain.connect(node_chain()))
    assert.has_error(function() s:forward { to_host = "x", to_port = 1, reconnect = "yes" } end)
    assert.has_error(function() s:forward { to_host = "x", to_port = 1, reconnect = { hold = -1 } } end)
    assert.has_error(function() s:socks { reconnect = { backof = 1 } } end)
    s:close()
    H.assert_no_leaks(sshchain)
  end)

  local function q(x) return "'" .. x:gsub("'", "'\\''") .. "'" end
  local INV = H.lab.inventory

  --- Waits (without the loop: the recipe is another process) until file holds pattern.
  local function wait_for(file, pattern, max)
    for _ = 1, (max or 10) * 10 do
      local text = H.readfile(file) or ""
      if text:find(pattern) then return text end
      os.execute("sleep 0.1")
    end
    return nil, H.readfile(file)
  end

  it("recipe forward: a jump host's process killed, the same local port serves again (curl before and after)", function()
    local out = H.tmpname()
    finally(function() os.remove(out) end)
    os.execute((". %s; %s/sshlua -r forward -i %s --json --for 8 t1:8080 > %s 2>&1 &")
      :format(q(H.lab.inventory_env), H.build, q(INV), out))
    local text = assert(wait_for(out, "serving"))
    local url = text:match('"local":"([^"]+)"'):gsub("\\/", "/")
    assert.are.equal("sshchain lab t1\n", H.sh("curl -s --max-time 5 " .. url .. "index.html"))
    kill_sessions("scl-j2", "sclj2")
    local restored, seen = wait_for(out, "restored in")
    assert.is_truthy(restored, seen)
    assert.matches("t1:8080: lost %(ECLOSED: hop 2 ", restored)
    assert.are.equal("sshchain lab t1\n", H.sh("curl -s --max-time 5 " .. url .. "index.html"))
    local done = assert(wait_for(out, "stopped", 15))
    assert.matches("stopped; 2 connection%(s%) served", done)
  end)

  it("recipe exec --retries: a host whose sshd is stopped is tried again until it answers; --retries 0 fails", function()
    local pid = listener_pid(H.lab.nodes[NODE].name)
    local name = H.lab.nodes[NODE].name
    local cmd = (". %s; %s/sshlua -r exec -i %s --json --connect-timeout 0.5 %%s %s -- echo up 2>&1 < /dev/null"):format(
      q(H.lab.inventory_env), H.build, q(INV), name)
    os.execute("kill -STOP " .. pid)
    local out, rc = H.sh(cmd:format("--retries 0"))
    assert.are.equal(1, rc, out)
    assert.matches('"code":"ETIMEDOUT"', out)
    out, rc = H.sh(("(sleep 1.5; kill -CONT %s) & %s"):format(pid, cmd:format("--retries 8")))
    assert.are.equal(0, rc, out)
    assert.matches('"stdout":"up\\n"', out)
    local attempts = tonumber(out:match('"attempts":(%d+)'))
    assert.is_true(attempts >= 2, out)
    assert.matches("attempt 1 of 9 failed %(ETIMEDOUT: hop 3 ", out)
    -- EAUTH is not tried again: one attempt, at once
    out, rc = H.sh((". %s; SCL_T2_PASSWORD=wrong %s/sshlua -r exec -i %s --json --retries 5 t2 -- true 2>&1")
      :format(q(H.lab.inventory_env), H.build, q(INV)))
    assert.are.equal(1, rc, out)
    assert.matches('"code":"EAUTH"', out)
    assert.is_falsy(out:find("attempt 1 of", 1, true), out)
  end)

  it("the recipes put keepalive on every hop, unless the inventory or --keepalive 0 says otherwise", function()
    local cli = require "sshchain.cli"
    local inv = assert(require("sshchain.inventory").load(INV))
    local chain = assert(cli.chain(inv, "t1", { keepalive = 15 }, { secrets = false }))
    for _, spec in ipairs(chain) do
      assert.are.same({ 15, 3 }, { spec.keepalive, spec.keepalive_count }, spec.host)
    end
    chain = assert(cli.chain(inv, "t1", { keepalive = 0 }, { secrets = false }))
    assert.is_nil(chain[1].keepalive)
    local cfg = H.tmpname()
    finally(function() os.remove(cfg) end)
    H.writefile(cfg, "Host a\n  HostName 10.231.1.2\n  ServerAliveInterval 0\nHost b\n  HostName 10.231.1.2\n"
      .. "  ServerAliveInterval 4\n  ServerAliveCountMax 7\n")
    local cinv = assert(require("sshchain.inventory").load(cfg))
    assert.are.equal(0, assert(cli.chain(cinv, "a", { keepalive = 15 }))[1].keepalive)
    local b = assert(cli.chain(cinv, "b", { keepalive = 15 }))[1]
    assert.are.same({ 4, 7 }, { b.keepalive, b.keepalive_count })
  end)
end)
