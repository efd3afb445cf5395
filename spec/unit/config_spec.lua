-- unit: the ssh_config reader (sshchain.config): tokens, quotes, Host blocks, first value wins,
-- Include, ProxyJump chains, and linear time on long lines.
require "sshchain" -- registers the modules compiled into it
local config = require "sshchain.config"

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. d))
  return d
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

describe("ssh_config", function()
  it("tokenizes keyword = value, quotes, comments and blank lines", function()
    assert.are.same({ "hostname", { "h" } }, { config.tokenize("  HostName   h  ") })
    assert.are.same({ "port", { "22" } }, { config.tokenize("Port=22") })
    assert.are.same({ "identityfile", { "/a b", "c" } }, { config.tokenize('IdentityFile "/a b" c') })
    assert.is_nil(config.tokenize("# a comment"))
    assert.is_nil(config.tokenize(" \t "))
    local k, err = config.tokenize('User "unterminated')
    assert.is_nil(k)
    assert.matches("unterminated", err)
  end)

  it("matches Host patterns with * ? and negation, case-insensitively", function()
    assert.is_true(config.host_matches({ "n*", "!n13" }, "N12"))
    assert.is_false(config.host_matches({ "n*", "!n13" }, "n13"))
    assert.is_true(config.host_matches({ "t?" }, "t4"))
    assert.is_false(config.host_matches({ "t?" }, "t44"))
  end)

  it("takes the first value of an option, and every IdentityFile", function()
    local blocks = assert(config.parse_text([[
Host t1
  User first
  IdentityFile ~/a
Host *
  User second
  Port 2222
  IdentityFile ~/b
]], "cfg"))
    local o = config.lookup(blocks, "t1")
    assert.are.same({ "first" }, o.user)
    assert.are.same({ "2222" }, o.port)
    assert.are.same({ "~/a", "~/b" }, o.identityfile)
  end)

  it("builds ProxyJump chains, the first jump's own ProxyJump nested", function()
    local blocks = assert(config.parse_text([[
Host j1
  HostName 10.0.0.1
Host j2
  HostName 10.0.0.2
  ProxyJump j1
Host t
  HostName 10.0.0.9
  User root
  ProxyJump j2,ops@10.0.0.3:2200
]], "cfg"))
    local chain = assert(config.chain(blocks, "t"))
    local hosts = {}
    for i, s in ipairs(chain) do hosts[i] = (s.user or "") .. "@" .. s.host .. ":" .. tostring(s.port or 22) end
    assert.are.same({ "@10.0.0.1:22", "@10.0.0.2:22", "ops@10.0.0.3:2200", "root@10.0.0.9:22" }, hosts)
    local loop = assert(config.parse_text("Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n", "cfg"))
    local c, err = config.chain(loop, "a")
    assert.is_nil(c)
    assert.matches("loop", err)
  end)

  it("reads an Include relative to the including file, and goes on after it", function()
    local d = tmpdir()
    write(d .. "/extra", "Host x\n  Port 2201\n")
    write(d .. "/config", "Include extra\nHost x\n  User after\n")
    local blocks = assert(config.parse(d .. "/config"))
    local o = config.lookup(blocks, "x")
    assert.are.same({ "2201" }, o.port)
    assert.are.same({ "after" }, o.user)
    os.execute("rm -rf " .. d)
  end)

  it("reads a line of a megabyte of white space in well under a second", function()
    local line = "Host " .. string.rep(" ", 1000000) .. "x" .. string.rep(" \t", 500000) .. "y"
    local t0 = os.clock()
    local blocks = assert(config.parse_text(line .. "\n  HostName " .. string.rep(" ", 1000000) .. "h\n", "cfg"))
    assert.is_true(os.clock() - t0 < 0.5, "took " .. (os.clock() - t0) .. " s")
    assert.are.same({ "x", "y" }, blocks[2].patterns)
  end)
end)
