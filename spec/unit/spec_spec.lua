-- unit: host specs (sshchain.spec): the one "user@host:port" parser, and every field checked
-- before C sees it (a NUL would cut a string short, a float or a big number would wrap a port).
require "sshchain" -- registers the modules compiled into it
local specs = require "sshchain.spec"

describe("host specs", function()
  it("splits user@host:port, [v6]:port and ssh:// forms", function()
    assert.are.same({ "ops", "10.0.0.1", "2222" }, { specs.split("ops@10.0.0.1:2222") })
    assert.are.same({ nil, "host", nil }, { specs.split("host") })
    assert.are.same({ "u", "fe80::1", "22" }, { specs.split("u@[fe80::1]:22") })
    assert.are.same({ nil, "::1", nil }, { specs.split("[::1]") })
    assert.are.same({ "u", "h", "7" }, { specs.split("ssh://u@h:7") })
    assert.are.same({ host = "h", user = "u", port = 7 }, specs.parse("u@h:7"))
  end)

  it("fills defaults and expands ~ in paths", function()
    local home = os.getenv("HOME")
    local s = specs.normalize({ host = "h", identity = "~/k", known_hosts = { "~/a", "/b" } },
      { user = "d", bogus_default = 1 })
    assert.are.equal("d", s.user)
    assert.are.same({ home .. "/k" }, s.identity)
    assert.are.same({ home .. "/a", "/b" }, s.known_hosts)
  end)

  local function rejects(field, value, pattern)
    local ok, err = pcall(specs.normalize, { host = "h", [field] = value })
    assert.is_false(ok, ("%s = %s was accepted"):format(field, tostring(value)))
    assert.matches("'" .. field .. "'", err)
    if pattern then assert.matches(pattern, err) end
  end

  it("refuses ports that are not integers from 1 to 65535", function()
    for _, v in ipairs { 1e10, 2 ^ 32 + 22, -1, 0 / 0, 22.9, 70000, 0, math.huge } do rejects("port", v) end
    assert.are.equal(65535, specs.normalize({ host = "h", port = 65535 }).port)
    assert.are.equal("integer", math.type(specs.normalize({ host = "h", port = 22.0 }).port))
  end)

  it("refuses timeouts and keepalives that are negative, zero, NaN or infinite", function()
    for _, v in ipairs { -1, 0, 0 / 0, math.huge, 1e300 } do rejects("timeout", v) end
    for _, v in ipairs { -1, 0 / 0, math.huge, 1e300 } do rejects("keepalive", v) end
    assert.are.equal(0, specs.normalize({ host = "h", keepalive = 0 }).keepalive)
  end)

  it("refuses max_sessions of 0, -1, NaN or a fraction", function()
    for _, v in ipairs { 0, -1, 0 / 0, 2.5 } do rejects("max_sessions", v) end
  end)

  it("refuses strings with a NUL byte instead of cutting them short", function()
    for _, f in ipairs { "host", "user", "password", "passphrase" } do rejects(f, "ab\0cd", "NUL byte") end
    rejects("known_hosts", "/tmp/kh\0x")
  end)

  it("refuses identities that are not paths, naming the field", function()
    local ok, err = pcall(specs.normalize, { host = "h", identity = { 42 } })
    assert.is_false(ok)
    assert.matches("'identity'", err)
    rejects("identity", 42)
  end)

  it("refuses unknown fields and bad host_key values", function()
    assert.has_error(function() specs.normalize({ host = "h", bogus = 1 }) end, "unknown host spec field 'bogus'")
    rejects("host_key", "maybe")
    assert.has_error(function() specs.normalize({ port = 22 }) end, "host spec needs a host")
  end)

  it("keys jump sessions by everything that reaches the account", function()
    local a = specs.key({ host = "h", user = "u", identity = { "k" } })
    assert.are.equal(a, specs.key({ identity = { "k" }, user = "u", host = "h" }))
    assert.are_not.equal(a, specs.key({ host = "h", user = "v", identity = { "k" } }))
    assert.are_not.equal(a, specs.key({ host = "h", user = "u", identity = { "k" } }, "parent"))
  end)
end)
