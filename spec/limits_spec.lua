-- limits_spec: real servers' limits (MaxSessions, MaxStartups), shared jump connections,
-- keepalive on a dead hop, and trees described as data.
local sshchain = require "sshchain"
local H = require "helper"

local function tcp_connections_to(host)
  local out = H.sh("ss -Htn state established dst " .. host)
  local n = 0
  for _ in out:gmatch("[^\n]+") do n = n + 1 end
  return n
end

local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

describe("server limits", function()
  after_each(function() H.assert_no_leaks(sshchain) end)

  it("runs 30 concurrent commands on a target with stock MaxSessions (10)", function()
    local s = assert(sshchain.connect(H.chain("t1")))
    local res = sshchain.parallel(range(30), function(i) return assert(s:exec("sleep 0.5; echo " .. i)).stdout end)
    for i, r in ipairs(res) do
      assert.is_true(r.ok, r.err)
      assert.are.equal(i .. "\n", r.value)
    end
    assert.is_true(s:connections() >= 3, "connections: " .. s:connections())
    s:close()
  end)

  it("commands given up while their channel opens do not use up the server's MaxSessions", function()
    local s = assert(sshchain.connect(H.chain("t3")))
    for _ = 1, 40 do -- most end while their channel is still being opened by the server
      local r, _, code = s:exec("true", { timeout = 0.001 })
      assert.is_truthy(r or code == "ETIMEDOUT", code)
      sshchain.sleep(0.01)
    end
    sshchain.sleep(0.3) -- the server's answers to those opens arrive, and those channels close
    local res = sshchain.parallel(range(10), function(i) return assert(s:exec("sleep 0.3; echo " .. i)).stdout end)
    for i, r in ipairs(res) do
      assert.is_true(r.ok, r.err)
      assert.are.equal(i .. "\n", r.value)
    end
    assert.are.equal(1, s:connections()) -- 10 at once fit in one connection: no slot was lost
    s:close()
  end)

  it("learns a lower MaxSessions than configured from the server's refusals", function()
    local s = assert(sshchain.connect(H.chain("t4", { max_sessions = 40 })))
    local res = sshchain.parallel(range(25), function(i) return assert(s:exec("sleep 0.5; echo " .. i)).stdout end)
    for i, r in ipairs(res) do
      assert.is_true(r.ok, r.err)
      assert.are.equal(i .. "\n", r.value)
    end
    assert.is_true(s:connections() >= 2)
    s:close()
  end)

  it("opens 100 sessions at once to one target through the jumps (stock MaxStartups)", function()
    local sessions = {}
    local res = sshchain.parallel(range(100), function(i)
      local s = assert(sshchain.connect(H.chain("t2")))
      sessions[i] = s
      return assert(s:exec("echo " .. i)).stdout
    end)
    for i, r in ipairs(res) do
      assert.is_true(r.ok, r.err)
      assert.are.equal(i .. "\n", r.value)
    end
    -- every chain shares the jump sessions: one TCP connection to j1
    assert.are.equal(1, tcp_connections_to(H.lab.j1.host))
    for _, s in ipairs(sessions) do s:close() end
    assert.are.equal(0, tcp_connections_to(H.lab.j1.host))
  end)

  it("private jumps (share = false) use their own connections", function()
    local a = assert(sshchain.connect(H.chain("t1"), { share = false }))
    local b = assert(sshchain.connect(H.chain("t1"), { share = false }))
    assert.are.equal(2, tcp_connections_to(H.lab.j1.host))
    a:close()
    b:close()
  end)
end)

describe("keepalive", function()
  after_each(function()
    os.execute("ip netns exec " .. H.lab.ns.j1 .. " pkill -CONT -f '^sshd: sclj1' 2>/dev/null")
    H.assert_no_leaks(sshchain)
  end)

  it("detects a dead hop: sessions under it fail with ECLOSED instead of hanging", function()
    local hops = { H.spec("j1", { keepalive = 0.3 }), H.spec("j2", { keepalive = 0.3 }), H.spec("t1", { keepalive = 0.3 }) }
    local s = assert(sshchain.connect(hops))
    assert(s:exec("true"))
    local task = sshchain.spawn(function() return s:exec("sleep 60") end)
    sshchain.sleep(0.3)
    -- freeze j1's sshd processes for this connection: TCP stays up, nothing answers
    os.execute("ip netns exec " .. H.lab.ns.j1 .. " pkill -STOP -f '^sshd: sclj1'")
    local t0 = sshchain.core.now()
    local r, msg, code = task:wait()
    assert.is_nil(r)
    assert.are.equal("ECLOSED", code)
    assert.is_string(msg)
    assert.is_true(sshchain.core.now() - t0 < 20)
    s:close()
  end)
end)

describe("tree described as data", function()
  after_each(function() H.assert_no_leaks(sshchain) end)

  it("runs every host's commands, in order within a host, in parallel across hosts", function()
    -- label: the name results carry (t1 is reached three ways; each is told apart, since the
    -- commands of different nodes interleave)
    local function node(name, cmds, children, label)
      local n = H.spec(name)
      n.name, n.commands, n.children = label or name, cmds, children
      return n
    end
    local tree = node("j1", { "whoami" }, {
      node("j2", { "whoami", "echo second" }, {
        node("t1", { "whoami", "echo a", "echo b" }),
        node("t2", { "whoami", { "exit 3" } }),
        node("t3", { { "sleep 0.2; echo slow", timeout = 5 }, "echo after" }),
        node("t4", { "whoami" }, { node("t1", { "whoami" }, nil, "t1 via t4") }),
      }),
      node("t1", { "whoami" }, nil, "t1 from j1"), -- unreachable from j1: reported, not fatal
    })
    tree.children[2].timeout = 2
    local seen = {}
    local results, all_ok = sshchain.tree(tree, function(r)
      seen[r.host] = seen[r.host] or {}
      table.insert(seen[r.host], r.cmd or ("ERROR " .. tostring(r.code)))
    end)
    assert.is_false(all_ok)
    assert.are.same({ "whoami" }, seen.j1)
    assert.are.same({ "whoami", "echo second" }, seen.j2)
    assert.are.same({ "whoami", "exit 3" }, seen.t2)
    assert.are.same({ "sleep 0.2; echo slow", "echo after" }, seen.t3)
    assert.are.same({ "whoami" }, seen.t4)
    -- t1 appears twice in the tree (once through t4) and once unreachable
    assert.are.same({ "whoami", "echo a", "echo b" }, seen.t1)
    assert.are.same({ "whoami" }, seen["t1 via t4"])
    assert.are.equal(1, #seen["t1 from j1"])
    assert.matches("^ERROR E", seen["t1 from j1"][1])
    local status = {}
    for _, r in ipairs(results) do
      if r.cmd then status[r.host .. ":" .. r.cmd] = r.status end
    end
    assert.are.equal(3, status["t2:exit 3"])
    assert.are.equal(0, status["t3:echo after"])
  end)
end)
