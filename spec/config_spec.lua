-- config_spec: ssh_config(5) files become native chains (ProxyJump included).
local sshchain = require "sshchain"
local config = require "sshchain.config"
local H = require "helper"

local function write_config(text)
  local dir = H.tmpname()
  os.execute("mkdir -p " .. dir)
  H.writefile(dir .. "/config", text)
  return dir
end

describe("ssh_config parsing", function()
  local dir
  after_each(function() if dir then os.execute("rm -rf " .. dir) end end)

  it("resolves Host patterns, first value wins, and IdentityFile accumulates", function()
    dir = write_config([[
# comment
User defaultuser
Host web-* !web-secret
  HostName %h.example.net
  Port 2200
  IdentityFile ~/.ssh/a
Host web-1
  Port 9999
  User alice
  IdentityFile "/keys/b c"
Host *
  ConnectTimeout 7
  ServerAliveInterval 15
  StrictHostKeyChecking accept-new
  UserKnownHostsFile /kh/known
]])
    local chain = assert(config.resolve("web-1", { config = dir .. "/config" }))
    assert.are.equal(1, #chain)
    local s = chain[1]
    assert.are.equal("web-1.example.net", s.host)
    assert.are.equal(2200, s.port)
    assert.are.equal("defaultuser", s.user)
    assert.are.same({ (os.getenv("HOME") or "") .. "/.ssh/a", "/keys/b c" }, s.identity)
    assert.are.equal(7, s.timeout)
    assert.are.equal(15, s.keepalive)
    assert.are.equal("accept-new", s.host_key)
    assert.are.same({ "/kh/known" }, s.known_hosts)
    local secret = assert(config.resolve("web-secret", { config = dir .. "/config" }))[1]
    assert.are.equal("web-secret", secret.host)
  end)

  it("builds chains from ProxyJump lists, nested through the first jump, and honours none", function()
    dir = write_config([[
Host a
  HostName 10.0.0.1
  User ua
Host b
  HostName 10.0.0.2
  ProxyJump nobody-uses-this
Host c
  HostName 10.0.0.3
  ProxyJump a
Host target
  HostName 10.9.9.9
  ProxyJump c,b,ub@10.0.0.4:2222
Host direct
  HostName 10.9.9.8
  ProxyJump none
Host * !a
  ProxyJump a
]])
    local chain = assert(config.resolve("target", { config = dir .. "/config" }))
    local hosts = {}
    for i, s in ipairs(chain) do hosts[i] = (s.user or "") .. "@" .. s.host .. ":" .. (s.port or 22) end
    assert.are.same({ "ua@10.0.0.1:22", "@10.0.0.3:22", "@10.0.0.2:22", "ub@10.0.0.4:2222", "@10.9.9.9:22" }, hosts)
    assert.are.equal(1, #assert(config.resolve("direct", { config = dir .. "/config" })))
  end)

  it("follows Include (globs; a relative path is under ~/.ssh, as with ssh)", function()
    dir = H.tmpname()
    os.execute("mkdir -p " .. dir)
    H.writefile(dir .. "/config", "Include " .. dir .. "/conf.d/*.conf\nHost x\n  Port 1\n")
    os.execute("mkdir -p " .. dir .. "/conf.d")
    H.writefile(dir .. "/conf.d/10-x.conf", "Host x\n  HostName 10.1.1.1\n  Port 2\n")
    H.writefile(dir .. "/conf.d/20-y.conf", "Host y\n  User yy\n")
    local x = assert(config.resolve("x", { config = dir .. "/config" }))[1]
    assert.are.equal("10.1.1.1", x.host)
    assert.are.equal(2, x.port)
    assert.are.equal("yy", assert(config.resolve("y", { config = dir .. "/config" }))[1].user)
  end)

  it("detects ProxyJump loops and reports a missing file", function()
    dir = write_config("Host loop\n  ProxyJump loop\n")
    local chain, err = config.resolve("loop", { config = dir .. "/config" })
    assert.is_nil(chain)
    assert.matches("loop", err)
    local s, msg, code = sshchain.connect("x", { config = dir .. "/missing" })
    assert.is_nil(s)
    assert.are.equal("EIO", code)
    assert.matches("missing", msg)
  end)
end)

describe("connect by ssh_config name", function()
  after_each(function() H.assert_no_leaks(sshchain) end)

  it("reaches a target through the ProxyJump chain of the lab's config", function()
    local s, err = sshchain.connect("t1", { config = H.lab.ssh_config, passphrase = H.lab.t1.passphrase })
    assert.is_truthy(s, err)
    assert.are.equal("hop 3 sclt1@10.231.3.11:22", s:label())
    assert.are.equal("sclt1\n", assert(s:exec("whoami")).stdout)
    s:close()
  end)
end)
