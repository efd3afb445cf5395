-- unit: the ssh_config reader (sshchain.config): tokens, quotes, Host and Match blocks, first
-- value wins, Include, ProxyJump chains, unknown and unimplemented keywords, tokens, algorithm
-- lists, and linear time on long lines. (ssh_g_spec compares it with ssh -G itself.)
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
    assert.are.same({ "hostname", { "h" }, "HostName", "h" }, { config.tokenize("  HostName   h  ") })
    assert.are.same({ "port", { "22" }, "Port", "22" }, { config.tokenize("Port=22") })
    local key, args = config.tokenize('IdentityFile "/a b" c # x')
    assert.are.same({ "identityfile", { "/a b", "c" } }, { key, args })
    assert.is_nil(config.tokenize("# a comment"))
    assert.is_nil(config.tokenize(" \t "))
    local k, err = config.tokenize('User "unterminated')
    assert.is_nil(k)
    assert.matches("quote", err)
  end)

  it("matches Host patterns with * ? and negation", function()
    assert.is_true(config.host_matches({ "n*", "!n13" }, "n12"))
    assert.is_false(config.host_matches({ "n*" }, "N12")) -- Host is case-sensitive, as in ssh
    assert.is_false(config.host_matches({ "n*", "!n13" }, "n13"))
    assert.is_true(config.host_matches({ "t?" }, "t4"))
    assert.is_false(config.host_matches({ "t?" }, "t44"))
  end)

  it("takes the first value of an option, and every IdentityFile", function()
    local d = tmpdir()
    write(d .. "/cfg", "Host t1\n  User first\n  IdentityFile ~/a\nHost *\n  User second\n  Port 2222\n"
      .. "  IdentityFile ~/b\n  IdentityFile ~/a\n")
    local e = assert(config.effective("t1", { config = d .. "/cfg" }))
    assert.are.equal("first", e.user)
    assert.are.equal("2222", e.port)
    assert.are.same({ "~/a", "~/b" }, e.identityfile) -- one of each, as ssh
    os.execute("rm -rf " .. d)
  end)

  it("builds ProxyJump chains, the first jump's own ProxyJump nested", function()
    local d = tmpdir()
    write(d .. "/cfg", [[
Host j1
  HostName 10.0.0.1
Host j2
  HostName 10.0.0.2
  ProxyJump j1
Host t
  HostName 10.0.0.9
  User root
  ProxyJump j2,ops@10.0.0.3:2200
Host a
  ProxyJump b
Host b
  ProxyJump a
]])
    local chain = assert(config.chain("t", { config = d .. "/cfg" }))
    local hosts = {}
    for i, s in ipairs(chain) do hosts[i] = (s.user or "") .. "@" .. s.host .. ":" .. tostring(s.port or 22) end
    assert.are.same({ "@10.0.0.1:22", "@10.0.0.2:22", "ops@10.0.0.3:2200", "root@10.0.0.9:22" }, hosts)
    local c, err = config.chain("a", { config = d .. "/cfg" })
    assert.is_nil(c)
    assert.matches("loop", err)
    os.execute("rm -rf " .. d)
  end)

  it("reads an Include in place and goes on after it in the including block", function()
    local d = tmpdir()
    write(d .. "/extra", "Host x\n  Port 2201\nHost nomatch\n")
    write(d .. "/config", "Host x\n  Include " .. d .. "/extra\n  User after\n")
    local e = assert(config.effective("x", { config = d .. "/config" }))
    assert.are.equal("2201", e.port)
    assert.are.equal("after", e.user) -- the include's Host nomatch does not end the block
    write(d .. "/loop", "Include " .. d .. "/loop\n")
    local none, err = config.effective("x", { config = d .. "/loop" })
    assert.is_nil(none)
    assert.matches("Too many recursive configuration includes", err)
    os.execute("rm -rf " .. d)
  end)

  it("evaluates Match in order: host, originalhost, user, localuser, exec, all, negation", function()
    local d = tmpdir()
    write(d .. "/cfg", [[
Host short
  HostName long.example
Match originalhost short exec "test %n = short"
  Port 2001
Match host *.example !user nobody
  User viamatch
Match localuser nosuchlocaluser
  IdentityFile /never
Match exec false
  ConnectTimeout 1
Match all
  ConnectTimeout 9
]])
    local e = assert(config.effective("short", { config = d .. "/cfg" }))
    assert.are.equal("long.example", e.hostname)
    assert.are.equal("2001", e.port)
    assert.are.equal("viamatch", e.user)
    assert.are.equal("9", e.connecttimeout)
    assert.is_true(e.identityfile_default)
    os.execute("rm -rf " .. d)
  end)

  it("reads the system file after the user's, as ssh does without -F", function()
    local d = tmpdir()
    write(d .. "/system", "Host sshchain-sys-test\n  Port 2345\n  User fromsystem\n")
    local e = assert(config.effective("sshchain-sys-test", { system_config = d .. "/system" }))
    assert.are.equal("2345", e.port)
    assert.are.equal("fromsystem", e.user)
    -- with a config file given (ssh -F), the system file is not read
    write(d .. "/user", "Host other\n")
    e = assert(config.effective("sshchain-sys-test", { config = d .. "/user", system_config = d .. "/system" }))
    assert.are.equal("22", e.port)
    os.execute("rm -rf " .. d)
  end)

  it("refuses an unknown keyword, naming the file and line, unless IgnoreUnknown lists it", function()
    local d = tmpdir()
    write(d .. "/bad", "Host x\n  Port 22\nHost y\n  Bogus yes\n")
    local e, err = config.effective("x", { config = d .. "/bad" })
    assert.is_nil(e)
    assert.matches(d .. "/bad: line 4: Bad configuration option: bogus", err, 1, true)
    assert.matches("terminating, 1 bad configuration options", err, 1, true)
    write(d .. "/ign", "IgnoreUnknown Bog*\nHost x\n  Bogus yes\n")
    assert.is_truthy(config.effective("x", { config = d .. "/ign" }))
    os.execute("rm -rf " .. d)
  end)

  it("says a keyword sshchain does not implement once, naming it, and never drops it silently", function()
    local d = tmpdir()
    write(d .. "/cfg", "Host *\n  ForwardX11 yes\n  Compression no\n")
    local said = {}
    local old = config.on_unsupported
    config.on_unsupported = function(k, where) said[#said + 1] = k .. " @ " .. where end
    local ok, err = pcall(function()
      assert.is_truthy(config.effective("a", { config = d .. "/cfg" }))
      assert.is_truthy(config.effective("b", { config = d .. "/cfg" }))
    end)
    config.on_unsupported = old
    assert(ok, err)
    -- Compression no is what sshchain does anyway; ForwardX11 yes is not, and is said once
    assert.are.same({ "ForwardX11 @ " .. d .. "/cfg line 2" }, said)
    os.execute("rm -rf " .. d)
  end)

  it("maps ControlMaster, ControlPath and ControlPersist to sshchain's mux (control, control_persist)", function()
    local d = tmpdir()
    local said = {}
    local old = config.on_unsupported
    config.on_unsupported = function(k) said[#said + 1] = k end
    local cases = {
      { "ControlMaster auto\n  ControlPersist 10m", true, 600 },
      { "ControlMaster autoask\n  ControlPersist yes", true, 1e7 },
      { "ControlMaster yes\n  ControlPersist 0", true, 1e7 },
      { "ControlMaster auto", true, nil },             -- the master lives with the process: a mux only if one answers
      { "ControlPath ~/.ssh/cm-%r@%h:%p", true, nil }, -- a client of a master: a mux if one answers
      { "ControlMaster no\n  ControlPersist 10m", nil, nil },
      { "ControlMaster auto\n  ControlPath none\n  ControlPersist no", true, nil },
      { "Compression no", nil, nil },
    }
    local ok, err = pcall(function()
      for _, c in ipairs(cases) do
        write(d .. "/cfg", "Host h\n  " .. c[1] .. "\n")
        config.flush()
        local spec = assert(config.spec_for("h", { config = d .. "/cfg" }))
        assert.are.equal(c[2], spec.control, c[1])
        assert.are.equal(c[3], spec.control_persist, c[1])
      end
      write(d .. "/cfg", "Host h\n  ControlPersist sometimes\n")
      config.flush()
      local none, perr = config.spec_for("h", { config = d .. "/cfg" })
      assert.is_nil(none)
      assert.matches("line 2: Bad ControlPersist argument.", perr, 1, true)
    end)
    config.on_unsupported = old
    assert(ok, err)
    -- ControlPath's own path is not used, and that is said (once per process)
    assert.are.equal(1, #said)
    assert.matches("^ControlPath %(sshchain's mux keeps its own socket", said[1])
    os.execute("rm -rf " .. d)
  end)

  it("expands tokens, ~, ~user and ${ENV} where ssh does, and fails on unknown ones", function()
    local d = tmpdir()
    write(d .. "/cfg", "Host h\n  HostName real.%h\n  User ruser\n  Port 2200\n"
      .. "  UserKnownHostsFile ~/k_%h_%p_%r_%n ~root/k2 ${HOME}/k3\n  IdentityFile %d/id_%h\n")
    local e = assert(config.effective("h", { config = d .. "/cfg" }))
    local home = require("sshchain.core").local_info().home
    local root_home = require("sshchain.core").user_home("root")
    assert.are.same({ home .. "/k_real.h_2200_ruser_h", root_home .. "/k2", os.getenv("HOME") .. "/k3" },
      e.userknownhostsfile)
    assert.are.same({ "%d/id_%h" }, e.identityfile) -- expanded at connect time, as ssh -G shows
    local spec = assert(config.spec_for("h", { config = d .. "/cfg" }))
    assert.are.same({ home .. "/id_real.h" }, spec.identity)
    write(d .. "/bad", "Host h\n  UserKnownHostsFile /k/%Z\n")
    local none, err = config.effective("h", { config = d .. "/bad" })
    assert.is_nil(none)
    assert.matches("unknown key %Z", err, 1, true)
    os.execute("rm -rf " .. d)
  end)

  it("fails a Match exec killed by a signal, and takes a missing command as not matching", function()
    local d = tmpdir()
    write(d .. "/cfg", "Match exec /nonexistent/command\n  Port 1\n")
    local e = assert(config.effective("h", { config = d .. "/cfg" }))
    assert.are.equal("22", e.port)
    write(d .. "/sig", "Match exec \"kill -9 $$\"\n  Port 1\n")
    local none, err = config.effective("h", { config = d .. "/sig" })
    assert.is_nil(none)
    assert.matches("match exec", err)
    os.execute("rm -rf " .. d)
  end)

  it("computes algorithm lists with + - ^ as ssh does, and for libssh from spec fields", function()
    assert.are.equal("aes128-ctr", config.algorithms("ciphers", "aes128-ctr"))
    assert.matches(",diffie%-hellman%-group14%-sha1$", config.algorithms("kexalgorithms", "+diffie-hellman-group14-sha1"))
    assert.matches("^ssh%-rsa,", config.algorithms("hostkeyalgorithms", "^ssh-rsa"))
    assert.is_nil((config.algorithms("ciphers", "-*")):find("aes"))
    assert.is_nil(config.algorithms("ciphers", "bogus"))
    local l = assert(config.algorithms("kexalgorithms", "+diffie-hellman-group14-sha1", "libssh"))
    assert.is_nil(l:find("sntrup")) -- libssh's defaults, not OpenSSH's
    assert.matches("diffie%-hellman%-group14%-sha1$", l)
    local none, err = config.algorithms("macs", "umac-64@openssh.com", "libssh")
    assert.is_nil(none)
    assert.matches("libssh", err)
  end)

  it("reads a line of a megabyte of white space in well under a second", function()
    local d = tmpdir()
    local line = "Host " .. string.rep(" ", 1000000) .. "x" .. string.rep(" \t", 500000) .. "y"
    write(d .. "/cfg", line .. "\n  HostName " .. string.rep(" ", 1000000) .. "h\n")
    local t0 = os.clock()
    local e = assert(config.effective("y", { config = d .. "/cfg" }))
    assert.is_true(os.clock() - t0 < 0.5, "took " .. (os.clock() - t0) .. " s")
    assert.are.equal("h", e.hostname)
    os.execute("rm -rf " .. d)
  end)
end)
