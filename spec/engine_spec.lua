-- engine_spec: single-hop sessions against the lab's first jump host: auth methods, host keys,
-- errors with their CODEs, and misuse.
local sshchain = require "sshchain"
local H = require "helper"

describe("connect and authenticate", function()
  after_each(function() H.assert_no_leaks(sshchain) end)

  it("logs in with a password and runs a command", function()
    local s = assert(sshchain.connect(H.spec("j1")))
    local r = assert(s:exec("id -un"))
    assert.are.equal("sclj1\n", r.stdout)
    assert.is_true(r.ok)
    s:close()
  end)

  it("logs in with a private key file", function()
    local spec = H.spec("j1", { identity = H.lab.keys.j1 })
    spec.password = nil
    local s = assert(sshchain.connect(spec))
    assert.are.equal("sclj1\n", assert(s:exec("whoami")).stdout)
    s:close()
  end)

  it("accepts the 'user@host:port' string form with defaults from opts", function()
    local j = H.lab.j1
    local s = assert(sshchain.connect(j.user .. "@" .. j.host .. ":" .. j.port,
      { password = j.password, known_hosts = H.lab.known_hosts }))
    assert.are.equal("sclj1\n", assert(s:exec("whoami")).stdout)
    s:close()
  end)

  it("logs in through ssh-agent", function()
    local sock = H.tmpname()
    local out = H.sh("ssh-agent -a " .. sock .. " -s")
    local pid = out:match("SSH_AGENT_PID=(%d+)")
    assert.is_truthy(pid, "ssh-agent did not start")
    local _, code = H.sh("SSH_AUTH_SOCK=" .. sock .. " ssh-add " .. H.lab.keys.j1 .. " 2>&1")
    assert.are.equal(0, code)
    -- the binding reads SSH_AUTH_SOCK from the environment of the process: run in a child
    local script = H.tmpname() .. ".lua"
    H.writefile(script, ([[
      local sshchain = require "sshchain"
      local s, err = sshchain.connect{host=%q, port=%d, user=%q, agent=true, known_hosts=%q, identity={}}
      if not s then io.stderr:write(err) os.exit(1) end
      io.write(assert(s:exec("whoami")).stdout)
    ]]):format(H.lab.j1.host, H.lab.j1.port, H.lab.j1.user, H.lab.known_hosts))
    local res, rc = H.sh("SSH_AUTH_SOCK=" .. sock .. " " .. H.build .. "/sshlua " .. script .. " 2>&1")
    H.sh("kill " .. pid)
    os.remove(script)
    assert.are.equal(0, rc, res)
    assert.are.equal("sclj1\n", res)
  end)

  it("fails with EAUTH on a wrong password, naming the hop and the stage", function()
    H.failed({ code = "EAUTH", stage = "auth", reason = "denied", hop = 1 },
      sshchain.connect(H.spec("j1", { password = "wrong" })))
  end)

  it("fails with EAUTH on a key the server does not know", function()
    local spec = H.spec("j1", { identity = H.lab.keys.other })
    spec.password = nil
    local s, _, code = sshchain.connect(spec)
    assert.is_nil(s)
    assert.are.equal("EAUTH", code)
  end)

  it("fails with EHOSTKEY on an unknown host key", function()
    local empty = H.tmpname()
    H.writefile(empty, "")
    H.failed({ code = "EHOSTKEY", stage = "host key", reason = "unknown", hop = 1 },
      sshchain.connect(H.spec("j1", { known_hosts = empty })))
    os.remove(empty)
  end)

  it("fails with EHOSTKEY when the host key has changed (man in the middle)", function()
    H.failed({ code = "EHOSTKEY", stage = "host key", reason = "changed", hop = 1 },
      sshchain.connect(H.spec("j1", { known_hosts = H.lab.known_hosts_bad })))
    -- even accept-new refuses a changed key
    H.failed({ code = "EHOSTKEY", stage = "host key", reason = "changed" },
      sshchain.connect(H.spec("j1", { known_hosts = H.lab.known_hosts_bad, host_key = "accept-new" })))
  end)

  it("learns an unknown key with accept-new, then trusts it strictly", function()
    local kh = H.tmpname()
    H.writefile(kh, "")
    local s = assert(sshchain.connect(H.spec("j1", { known_hosts = kh, host_key = "accept-new" })))
    s:close()
    assert.matches("10%.231%.1%.2", H.readfile(kh))
    s = assert(sshchain.connect(H.spec("j1", { known_hosts = kh })))
    s:close()
    os.remove(kh)
  end)

  it("skips verification with host_key = 'off'", function()
    local s = assert(sshchain.connect(H.spec("j1", { known_hosts = "/nonexistent/kh", host_key = "off" })))
    s:close()
  end)

  it("verifies [host]:port entries", function()
    local s = assert(sshchain.connect(H.spec("j1big")))
    assert.are.equal("sclj1\n", assert(s:exec("whoami")).stdout)
    s:close()
  end)

  it("fails with ECONNECT on a refused port", function()
    H.failed({ code = "ECONNECT", stage = "connect", reason = "refused", hop = 1 },
      sshchain.connect(H.spec("j1", { port = H.lab.refused.port })))
  end)

  it("fails with ECONNECT on an unreachable address", function()
    H.failed({ code = "ECONNECT", stage = "connect", hop = 1 },
      sshchain.connect(H.spec("j1", { host = H.lab.unreachable.host })))
  end)

  it("fails with ETIMEDOUT when the server never answers", function()
    local t0 = sshchain.core.now()
    H.failed({ code = "ETIMEDOUT", stage = "handshake", reason = "timeout", hop = 1 },
      sshchain.connect(H.spec("j1", { port = H.lab.silent.port, timeout = 1 })))
    assert.is_true(sshchain.core.now() - t0 < 8)
  end)

  it("gives a connect and a sleep their whole time after the script blocked for longer", function()
    -- the event loop does not turn while the script runs a command: its cached clock goes stale
    assert(sshchain.connect(H.spec("j1"))):close()
    os.execute("sleep 1.5")
    local s, err = sshchain.connect(H.spec("j1", { timeout = 1 }))
    assert.is_truthy(s, err)
    s:close()
    os.execute("sleep 1")
    local t0 = sshchain.core.now()
    sshchain.sleep(0.5)
    assert.is_true(sshchain.core.now() - t0 >= 0.45)
  end)
end)

describe("misuse", function()
  after_each(function() H.assert_no_leaks(sshchain) end)

  it("raises on wrong argument types", function()
    assert.has_error(function() sshchain.connect(42) end)
    assert.has_error(function() sshchain.connect({ host = "x", bogus = 1 }) end)
    assert.has_error(function() sshchain.connect({ host = "x", port = "22" }) end)
    assert.has_error(function() sshchain.connect({ host = "x", host_key = "maybe" }) end)
  end)

  it("closing twice is harmless; a closed session raises a clear error", function()
    local s = assert(sshchain.connect(H.spec("j1")))
    s:close()
    s:close()
    assert.has_error(function() s:exec("true") end, "sshchain: session is closed")
    assert.has_error(function() s:exec(42) end)
  end)

  it("a session dropped without close is closed by the garbage collector", function()
    do
      local s = assert(sshchain.connect(H.spec("j1")))
      assert(s:exec("true"))
    end
    collectgarbage()
    collectgarbage()
    assert.are.equal(0, sshchain.stats().sessions)
  end)
end)
