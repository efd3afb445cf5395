-- chain_spec: targets reachable only through jump hosts; chains of many hops; trees of sessions
-- sharing one connection; failures named by hop.
local sshchain = require "sshchain"
local H = require "helper"

local function tcp_connections_to(host)
  local out = H.sh("ss -Htn state established dst " .. host)
  local n = 0
  for _ in out:gmatch("[^\n]+") do n = n + 1 end
  return n
end

describe("chains", function()
  after_each(function() H.assert_no_leaks(sshchain) end)

  it("reaches each target through two jump hosts, each with its own auth", function()
    for _, name in ipairs { "t1", "t2", "t3", "t4" } do
      local s, err = sshchain.connect(H.chain(name))
      assert.is_truthy(s, err)
      local r = assert(s:exec("whoami; hostname -I"))
      assert.matches("^" .. H.lab[name].user .. "\n", r.stdout)
      assert.matches(H.lab[name].host:gsub("%.", "%%."), r.stdout)
      s:close()
    end
  end)

  it("the targets are not reachable directly", function()
    local s, _, code = sshchain.connect(H.spec("t4", { timeout = 2 }))
    assert.is_nil(s)
    assert.is_truthy(code == "ECONNECT" or code == "ETIMEDOUT")
  end)

  it("goes through five hops (hosts may repeat)", function()
    local hops = { H.spec("j1"), H.spec("j1"), H.spec("j2"), H.spec("t1"), H.spec("t4") }
    local s = assert(sshchain.connect(hops))
    assert.are.equal("hop 5 sclt4@10.231.3.14:22", s:label())
    assert.are.equal("sclt4\n", assert(s:exec("whoami")).stdout)
    local r = assert(s:exec("head -c 3000000 /dev/zero | tr '\\0' x"))
    assert.are.equal(3000000, #r.stdout)
    s:close()
  end)

  it("names the failing hop and stage", function()
    H.failed({ code = "EAUTH", stage = "auth", reason = "denied", hop = 3 },
      sshchain.connect(H.chain("t4", { password = "wrong", identity = {} })))
  end)

  it("fails with EAUTH on a wrong key passphrase, saying so", function()
    local msg = H.failed({ code = "EAUTH", stage = "auth", hop = 3 },
      sshchain.connect(H.chain("t1", { passphrase = "not-it" })))
    assert.matches("wrong passphrase", msg)
  end)

  it("decrypts a key once per process, but never lets a wrong or missing passphrase use it", function()
    local good = assert(sshchain.connect(H.chain("t1"))) -- decrypted, and kept for the process
    good:close()
    local s, msg, code = sshchain.connect(H.chain("t1", { passphrase = "not-it" }))
    assert.is_nil(s)
    assert.are.equal("EAUTH", code, msg)
    local nopass = H.spec("t1")
    nopass.passphrase = nil
    s, msg, code = sshchain.connect({ H.spec("j1"), H.spec("j2"), nopass })
    assert.is_nil(s)
    assert.are.equal("EAUTH", code, msg)
    assert.matches("needs a passphrase", msg, 1, true)
    local again = assert(sshchain.connect(H.chain("t1")))
    assert.are.equal("sclt1\n", assert(again:exec("whoami")).stdout)
    again:close()
  end)

  it("fails with ECHANNEL when a hop forbids forwarding", function()
    H.failed({ code = "ECHANNEL", stage = "hop channel", reason = "channel refused", hop = 3 },
      sshchain.connect({ H.spec("j1"), H.spec("j2nofwd"), H.spec("t1") }))
  end)

  it("fails with ECHANNEL when the target is down", function()
    H.failed({ code = "ECHANNEL", stage = "hop channel", hop = 3 },
      sshchain.connect(H.chain("t4", { host = "10.231.3.99", timeout = 20 })))
  end)

  it("fails with ETIMEDOUT when a jump host never answers", function()
    local hops = H.chain("t1")
    hops[1].port = H.lab.silent.port
    hops[1].timeout = 1
    H.failed({ code = "ETIMEDOUT", stage = "handshake", reason = "timeout", hop = 1 },
      sshchain.connect(hops))
  end)
end)

describe("trees", function()
  after_each(function() H.assert_no_leaks(sshchain) end)

  it("ten target sessions share one TCP connection to the first jump host", function()
    local j1 = assert(sshchain.connect(H.spec("j1")))
    local j2 = assert(j1:connect(H.spec("j2")))
    local names = { "t1", "t2", "t3", "t4" }
    local targets = {}
    for i = 1, 10 do
      targets[i] = assert(j2:connect(H.spec(names[(i - 1) % 4 + 1])))
    end
    local res = sshchain.parallel(targets, function(t) return assert(t:exec("whoami")).stdout end)
    for i, r in ipairs(res) do
      assert.is_true(r.ok, r.err)
      assert.are.equal(H.lab[names[(i - 1) % 4 + 1]].user .. "\n", r.value)
    end
    assert.are.equal(1, tcp_connections_to(H.lab.j1.host))
    -- jump hosts run commands too
    assert.are.equal("sclj2\n", assert(j2:exec("whoami")).stdout)
    j1:close()
    for _, t in ipairs(targets) do assert.are.equal("closed", t:state()) end
    assert.has_error(function() targets[1]:exec("true") end, "sshchain: session is closed")
  end)

  it("a child's failure does not disturb its siblings", function()
    local j2 = assert(sshchain.connect({ H.spec("j1"), H.spec("j2") }))
    local good = assert(j2:connect(H.spec("t1")))
    local bad, _, code = j2:connect(H.spec("t2", { password = "nope", identity = {} }))
    assert.is_nil(bad)
    assert.are.equal("EAUTH", code)
    assert.are.equal("sclt1\n", assert(good:exec("whoami")).stdout)
    assert.are.equal("sclj2\n", assert(j2:exec("whoami")).stdout)
    j2:close()
  end)

  it("closing a parent ends its children's running commands with ECLOSED", function()
    local j2 = assert(sshchain.connect({ H.spec("j1"), H.spec("j2") }))
    local t = assert(j2:connect(H.spec("t1")))
    local task = sshchain.spawn(function() return t:exec("sleep 30") end)
    sshchain.sleep(0.5)
    j2:close()
    local r, msg, code = task:wait()
    assert.is_nil(r)
    assert.are.equal("ECLOSED", code)
    assert.is_string(msg)
  end)
end)
