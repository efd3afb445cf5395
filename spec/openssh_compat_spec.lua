-- openssh_compat_spec: the user's own OpenSSH setup against the lab: old gear that only speaks
-- diffie-hellman-group14-sha1 / ssh-rsa, user certificates (TrustedUserCAKeys), host
-- certificates and @revoked known_hosts lines, ProxyCommand, ssh-agent (a socket path,
-- IdentitiesOnly, IdentityAgent) and agent forwarding through two jumps, SendEnv, and what
-- sshchain.log / sshlua -v say.
local sshchain = require "sshchain"
local H = require "helper"

local function lab_config(text)
  local dir = H.tmpname()
  os.execute("mkdir -p " .. dir)
  -- the lab's own config last: what the text sets first wins, as with ssh
  H.writefile(dir .. "/config", text .. "\nMatch all\nInclude " .. H.lab.ssh_config .. "\n")
  return dir .. "/config", dir
end

local function start_agent(keys)
  local sock = H.tmpname()
  local out = H.sh("ssh-agent -a " .. sock .. " -s")
  local pid = assert(out:match("SSH_AGENT_PID=(%d+)"), "ssh-agent did not start")
  for _, k in ipairs(keys) do
    local _, rc = H.sh("SSH_AUTH_SOCK=" .. sock .. " ssh-add -q " .. k .. " 2>&1")
    assert.are.equal(0, rc)
  end
  return sock, function() os.execute("kill " .. pid .. " 2>/dev/null") end
end

describe("old gear (diffie-hellman-group14-sha1, ssh-rsa)", function()
  after_each(function() H.assert_no_leaks(sshchain) end)

  it("is refused by default with both sides' algorithms in the error", function()
    local msg = H.failed({ code = "ECONNECT", stage = "handshake", reason = "algorithms", hop = 3 },
      sshchain.connect(H.chain("legacy")))
    assert.matches("server [diffie-hellman-group14-sha1", msg, 1, true)
    assert.matches("client [curve25519-sha256", msg, 1, true)
    assert.matches("KexAlgorithms +NAME", msg, 1, true)
  end)

  it("is reached with kex and hostkeys spec fields, OpenSSH's + syntax", function()
    local s = assert(sshchain.connect(H.chain("legacy",
      { kex = "+diffie-hellman-group14-sha1", hostkeys = "+ssh-rsa" })))
    assert.are.equal("sclt4\n", assert(s:exec("whoami")).stdout)
    local info = s._c:info()
    assert.are.equal("diffie-hellman-group14-sha1", info.kex)
    assert.matches("^ssh%-rsa ", info.host_key)
    s:close()
  end)

  it("is reached when ssh_config says KexAlgorithms and HostKeyAlgorithms +...", function()
    local path, dir = lab_config(([[
Host oldbmc
  HostName %s
  Port %d
  User sclt4
  IdentityFile %s
  ProxyJump j2
  KexAlgorithms +diffie-hellman-group14-sha1
  HostKeyAlgorithms +ssh-rsa]]):format(H.lab.legacy.host, H.lab.legacy.port, H.lab.keys.t4))
    local s = assert(sshchain.connect("oldbmc", { config = path }))
    assert.are.equal("sclt4\n", assert(s:exec("whoami")).stdout)
    s:close()
    os.execute("rm -rf " .. dir)
  end)

  it("raises on an algorithm libssh does not have, naming the field", function()
    assert.has_error(function() sshchain.connect(H.spec("j1", { kex = "sntrup761x25519-sha512@openssh.com" })) end,
      "host spec field 'kex': sntrup761x25519-sha512@openssh.com is not an algorithm libssh supports "
      .. "(curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,"
      .. "diffie-hellman-group18-sha512,diffie-hellman-group16-sha512,diffie-hellman-group-exchange-sha256,"
      .. "diffie-hellman-group14-sha256,diffie-hellman-group-exchange-sha1,diffie-hellman-group14-sha1,"
      .. "diffie-hellman-group1-sha1)")
  end)
end)

describe("OpenSSH certificates", function()
  after_each(function() H.assert_no_leaks(sshchain) end)

  it("logs in with a user certificate: the spec's, and <key>-cert.pub found by itself", function()
    local key = H.lab.keys.certuser
    local s = assert(sshchain.connect(H.chain("certsrv", { identity = key, certificate = key .. "-cert.pub" })))
    assert.are.equal("sclt3\n", assert(s:exec("whoami")).stdout)
    s:close()
    s = assert(sshchain.connect(H.chain("certsrv", { identity = key })))
    assert.are.equal("sclt3\n", assert(s:exec("whoami")).stdout)
    s:close()
  end)

  it("is refused without the certificate (the key alone is authorized nowhere)", function()
    local dir = H.tmpname()
    os.execute("mkdir -p " .. dir .. " && cp " .. H.lab.keys.certuser .. " " .. dir .. "/k")
    H.failed({ code = "EAUTH", stage = "auth", hop = 3 },
      sshchain.connect(H.chain("certsrv", { identity = dir .. "/k" })))
    os.execute("rm -rf " .. dir)
  end)

  it("takes CertificateFile from ssh_config", function()
    local dir = H.tmpname()
    os.execute("mkdir -p " .. dir .. " && cp " .. H.lab.keys.certuser .. " " .. dir .. "/k && cp "
      .. H.lab.keys.certuser .. "-cert.pub " .. dir .. "/elsewhere.pub")
    local path = lab_config(([[
Host certhost
  HostName %s
  Port %d
  User sclt3
  IdentityFile %s/k
  CertificateFile %s/elsewhere.pub
  ProxyJump j2]]):format(H.lab.certsrv.host, H.lab.certsrv.port, dir, dir))
    local s = assert(sshchain.connect("certhost", { config = path }))
    assert.are.equal("sclt3\n", assert(s:exec("whoami")).stdout)
    s:close()
    os.execute("rm -rf " .. dir)
  end)

  it("says host certificates are not supported when only @cert-authority names the host", function()
    local kh = H.tmpname()
    H.writefile(kh, H.readfile(H.lab.known_hosts) .. "@cert-authority * "
      .. H.readfile(H.lab.keys.host_ca .. ".pub"))
    -- the lab's known_hosts has t3cert's plain key: without it only the CA line is left
    local only_ca = H.tmpname()
    local lines = {}
    for line in H.readfile(kh):gmatch("[^\n]+") do
      if not line:find("[10.231.3.13]:2026", 1, true) then lines[#lines + 1] = line end
    end
    H.writefile(only_ca, table.concat(lines, "\n") .. "\n")
    local chain = { H.spec("j1", { known_hosts = only_ca }), H.spec("j2", { known_hosts = only_ca }),
      H.spec("certsrv", { identity = H.lab.keys.certuser, known_hosts = only_ca }) }
    local msg = H.failed({ code = "EHOSTKEY", stage = "host key", reason = "unsupported", hop = 3 },
      sshchain.connect(chain))
    assert.matches("@cert-authority", msg, 1, true)
    os.remove(kh)
    os.remove(only_ca)
  end)

  it("learns a new key with its name hashed when HashKnownHosts says so, and knows it again", function()
    local kh = H.tmpname()
    H.writefile(kh, "")
    local s = assert(sshchain.connect(H.spec("j1", { known_hosts = kh, host_key = "accept-new", hash_known_hosts = true })))
    s:close()
    local text = H.readfile(kh)
    assert.matches("^|1|[%w+/=]+|[%w+/=]+ ssh%-ed25519 [%w+/=]+\n$", text)
    assert.is_nil(text:find("10.231.1.2", 1, true))
    s = assert(sshchain.connect(H.spec("j1", { known_hosts = kh, host_key = "strict" })))
    s:close()
    -- and by default the name stays as it is, as ssh writes it
    H.writefile(kh, "")
    s = assert(sshchain.connect(H.spec("j1big", { known_hosts = kh, host_key = "accept-new" })))
    s:close()
    assert.matches("^%[10.231.1.2%]:2200 ssh%-ed25519 ", H.readfile(kh))
    os.remove(kh)
  end)

  it("asks first for the host key type known_hosts has, as ssh does, when the server has several", function()
    -- t4sftp has t4's ed25519 key and the RSA one; each known_hosts file below knows one of them
    local sftponly = H.lab.sftponly
    local name = ("[%s]:%d"):format(sftponly.host, sftponly.port)
    local rsa = H.readfile(H.lab.dir .. "/hostkeys/legacy.pub"):match("^(%S+ %S+)")
    local ed = H.readfile(H.lab.dir .. "/hostkeys/t4.pub"):match("^(%S+ %S+)")
    local cfg, dir = lab_config("")
    for _, case in ipairs { { key = rsa, want = "^ssh%-rsa " }, { key = ed, want = "^ssh%-ed25519 " } } do
      local kh = H.tmpname()
      local jumps = {}
      for line in H.readfile(H.lab.known_hosts):gmatch("[^\n]+") do
        if not line:find(sftponly.host, 1, true) then jumps[#jumps + 1] = line end
      end
      H.writefile(kh, table.concat(jumps, "\n") .. "\n" .. name .. " " .. case.key .. "\n")
      local s = assert(sshchain.connect(H.chain("sftponly", { known_hosts = kh, host_key = "strict" })))
      assert.matches(case.want, s._c:info().host_key)
      s:close()
      -- and ssh agrees: it connects with the same file, strictly
      local _, rc = H.sh(("ssh -F %s -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o BatchMode=yes "
        .. "-o IdentityFile=%s -o IdentitiesOnly=yes -J j2 -s -p %d %s@%s sftp </dev/null >/dev/null 2>&1")
        :format(cfg, kh, sftponly.identity, sftponly.port, sftponly.user, sftponly.host))
      assert.are.equal(0, rc)
      os.remove(kh)
    end
    os.execute("rm -rf " .. dir)
  end)

  it("refuses a @revoked host key whatever host_key says", function()
    local kh = H.tmpname()
    H.writefile(kh, H.readfile(H.lab.known_hosts) .. "@revoked * " .. H.readfile(H.lab.dir .. "/hostkeys/t3.pub"))
    for _, mode in ipairs { "strict", "accept-new", "off" } do
      local chain = H.chain("t3", { known_hosts = kh, host_key = mode })
      local msg = H.failed({ code = "EHOSTKEY", stage = "host key", reason = "revoked", hop = 3 },
        sshchain.connect(chain))
      assert.matches("REVOKED", msg, 1, true)
    end
    os.remove(kh)
  end)
end)

describe("ProxyCommand", function()
  after_each(function() H.assert_no_leaks(sshchain) end)

  it("reaches the first jump through nc %h %p, and the chain goes on through it", function()
    local path, dir = lab_config("Host j1\n  ProxyCommand nc %h %p\n")
    local s = assert(sshchain.connect("t1", { config = path, passphrase = H.lab.t1.passphrase }))
    assert.are.equal("sclt1\n", assert(s:exec("whoami")).stdout)
    assert.are.equal("hop 3 sclt1@10.231.3.11:22", s:label())
    s:close()
    os.execute("rm -rf " .. dir)
  end)

  it("fails with ECONNECT naming the command and how it ended, without a hang", function()
    local t0 = sshchain.core.now()
    local msg = H.failed({ code = "ECONNECT", reason = "proxy", hop = 1 },
      sshchain.connect(H.spec("j1", { proxy_command = "sh -c 'exit 3'" })))
    assert.matches("ProxyCommand 'sh -c 'exit 3'' exited with status 3", msg, 1, true)
    msg = H.failed({ code = "ECONNECT", reason = "proxy", hop = 1 },
      sshchain.connect(H.spec("j1", { proxy_command = "/nonexistent/proxy %h" })))
    assert.matches("exited with status 127", msg, 1, true)
    assert.is_true(sshchain.core.now() - t0 < 8, "took " .. (sshchain.core.now() - t0) .. " s")
  end)

  it("leaves the session's own failures as they are (auth, timeout)", function()
    H.failed({ code = "EAUTH", stage = "auth", hop = 1 },
      sshchain.connect(H.spec("j1", { proxy_command = "nc %h %p", password = "wrong" })))
    H.failed({ code = "ETIMEDOUT", hop = 1 },
      sshchain.connect(H.spec("j1", { proxy_command = "sleep 30", timeout = 1 })))
  end)

  it("is refused on a hop that has a parent", function()
    H.failed({ code = "ECONNECT", reason = "proxy", hop = 2 },
      sshchain.connect({ H.spec("j1"), H.spec("j2", { proxy_command = "nc %h %p" }) }))
  end)
end)

describe("ssh-agent", function()
  after_each(function() H.assert_no_leaks(sshchain) end)

  it("is used through a socket path, and IdentitiesOnly keeps it to the configured keys", function()
    local sock, stop = start_agent({ H.lab.keys.j1 })
    local dir = H.tmpname()
    os.execute("mkdir -p " .. dir .. " && cp " .. H.lab.keys.j1 .. ".pub " .. dir .. "/agentkey.pub")
    local ok, err = pcall(function()
      local base = { host = H.lab.j1.host, user = H.lab.j1.user, known_hosts = H.lab.known_hosts, timeout = 10 }
      local function with(t)
        local s = {}
        for k, v in pairs(base) do s[k] = v end
        for k, v in pairs(t) do s[k] = v end
        return s
      end
      local s = assert(sshchain.connect(with { agent = sock, identity = {} }))
      assert.are.equal("agent", s._c:info().auth)
      s:close()
      -- IdentitiesOnly: the agent's key is not one of the identities: not offered
      H.failed({ code = "EAUTH", hop = 1 },
        sshchain.connect(with { agent = sock, identities_only = true, identity = { H.lab.keys.other } }))
      -- an identity whose public half is the agent's key: the agent signs (no private file)
      s = assert(sshchain.connect(with { agent = sock, identities_only = true, identity = { dir .. "/agentkey" } }))
      assert.are.equal("agent", s._c:info().auth)
      s:close()
      -- the identity files' keys go first, as OpenSSH orders them: with six other keys added
      -- before it, j1's key is still tried within sshd's MaxAuthTries (6)
      local others = {}
      for i = 1, 6 do
        others[i] = dir .. "/other" .. i
        assert(os.execute("ssh-keygen -q -t ed25519 -N '' -f " .. others[i] .. " </dev/null >/dev/null"))
      end
      local stop2
      local sock2
      sock2, stop2 = start_agent(others)
      H.sh("SSH_AUTH_SOCK=" .. sock2 .. " ssh-add -q " .. H.lab.keys.j1 .. " 2>&1")
      local ok2, err2 = pcall(function()
        local c = assert(sshchain.connect(with { agent = sock2, identity = { H.lab.keys.j1 } }))
        assert.are.equal("agent", c._c:info().auth)
        c:close()
        -- without the identity, the agent's order stands: sshd gives up (EAUTH, not a hang)
        local msg = H.failed({ code = "EAUTH", reason = "denied", hop = 1 },
          sshchain.connect(with { agent = sock2, identity = {} }))
        assert.matches("too many authentication failures", msg, 1, true)
      end)
      stop2()
      assert(ok2, err2)
      -- IdentityAgent from ssh_config, and IdentityAgent none
      -- (the lab's config says IdentitiesOnly yes: the agent offers what IdentityFile names)
      local path = lab_config(("Host viaagent\n  HostName %s\n  User %s\n  IdentityAgent %s\n  IdentityFile %s/agentkey\n"
        .. "Host noagent\n  HostName %s\n  User %s\n  IdentityAgent none\n  IdentityFile %s/agentkey\n"):format(
        H.lab.j1.host, H.lab.j1.user, sock, dir, H.lab.j1.host, H.lab.j1.user, dir))
      s = assert(sshchain.connect("viaagent", { config = path }))
      s:close()
      H.failed({ code = "EAUTH", hop = 1 }, sshchain.connect("noagent", { config = path }))
    end)
    stop()
    os.execute("rm -rf " .. dir)
    assert(ok, err)
  end)

  it("is forwarded: ssh-add -l on every hop of a chain lists the client's keys", function()
    local sock, stop = start_agent({ H.lab.keys.other })
    local ok, err = pcall(function()
      local fa = { forward_agent = true, agent = sock }
      local j1 = assert(sshchain.connect(H.spec("j1", fa)))
      local j2 = assert(j1:connect(H.spec("j2", fa)))
      local t3 = assert(j2:connect(H.spec("t3", fa)))
      for _, s in ipairs { j1, j2, t3 } do
        local r = assert(s:exec("ssh-add -l"))
        assert.are.equal(0, r.status, s:label() .. ": " .. r.stderr)
        assert.matches("sshchain%-lab%-id_other", r.stdout)
      end
      t3:close()
      j2:close()
      j1:close()
      -- without forward_agent the hop has no agent
      local plain = assert(sshchain.connect(H.spec("j1", { agent = sock })))
      local r = assert(plain:exec("ssh-add -l"))
      assert.are.equal(2, r.status)
      plain:close()
    end)
    stop()
    assert(ok, err)
  end)
end)

describe("what the user's config and environment say", function()
  after_each(function() H.assert_no_leaks(sshchain) end)

  it("sends the variables SendEnv names (and the server accepts)", function()
    local script = H.tmpname() .. ".lua"
    H.writefile(script, ([[
      local sshchain = require "sshchain"
      local s = assert(sshchain.connect{host=%q, user=%q, password=%q, known_hosts=%q,
        send_env = { "LC_SSHCHAIN_*", "-LC_SSHCHAIN_NOT" }})
      io.write(assert(s:exec("echo ${LC_SSHCHAIN_T1:-unset} ${LC_SSHCHAIN_NOT:-unset}")).stdout)
    ]]):format(H.lab.j1.host, H.lab.j1.user, H.lab.j1.password, H.lab.known_hosts))
    local out, rc = H.sh("LC_SSHCHAIN_T1=hello LC_SSHCHAIN_NOT=no " .. H.build .. "/sshlua " .. script .. " 2>&1")
    os.remove(script)
    assert.are.equal(0, rc, out)
    assert.are.equal("hello unset\n", out)
  end)

  it("fails with EAUTH saying so when an encrypted key has no passphrase and no terminal", function()
    local path, dir = lab_config("")
    local msg = H.failed({ code = "EAUTH", hop = 3 }, sshchain.connect("t1", { config = path }))
    assert.matches("needs a passphrase", msg, 1, true)
    os.execute("rm -rf " .. dir)
  end)

  it("asks on the terminal for the passphrase of an encrypted key ssh_config names", function()
    if not os.execute("command -v script >/dev/null 2>&1") then pending("no script(1)") return end
    local path, dir = lab_config("")
    local script = dir .. "/ask.lua"
    H.writefile(script, ([[
      local sshchain = require "sshchain"
      local s, err = sshchain.connect("t1", { config = %q })
      print(s and assert(s:exec("whoami")).stdout or err)
    ]]):format(path))
    -- script(1) gives the child a terminal; the passphrase is typed on it
    local out = H.sh("(sleep 1; printf '" .. H.lab.t1.passphrase .. "\\n') | timeout 30 script -qec '"
      .. H.build .. "/sshlua " .. script .. "' /dev/null")
    os.execute("rm -rf " .. dir)
    assert.matches("Enter passphrase for key '" .. H.lab.keys.t1 .. "'", out, 1, true)
    assert.matches("sclt1", out, 1, true)
  end)

  it("says with ECONNECT/EIO which file and line a bad config has", function()
    local path, dir = lab_config("Host t1\n  ProxyJump j2\n  Frobnicate yes\n")
    local s, msg, code = sshchain.connect("t1", { config = path })
    assert.is_nil(s)
    assert.are.equal("EIO", code)
    assert.matches(path .. ": line 3: Bad configuration option: frobnicate", msg, 1, true)
    os.execute("rm -rf " .. dir)
  end)

  it("decodes a channel-open refusal (RFC 4254 reason)", function()
    local msg = H.failed({ code = "ECHANNEL", hop = 3 },
      sshchain.connect({ H.spec("j1"), H.spec("j2nofwd"), H.spec("t3") }))
    assert.matches("administratively prohibited", msg, 1, true)
  end)
end)

describe("sshchain.log and sshlua -v", function()
  after_each(function()
    sshchain.log { level = 0, handler = require("sshchain.log").default_handler }
    H.assert_no_leaks(sshchain)
  end)

  it("says each hop's stages, algorithms and auth, and never a secret", function()
    local said = {}
    sshchain.log { level = 3, handler = function(level, hop, message) said[#said + 1] = { level, hop, message } end }
    local s = assert(sshchain.connect(H.chain("t3")))
    s:close()
    local text, libssh = {}, 0
    for _, x in ipairs(said) do
      text[#text + 1] = tostring(x[2]) .. " " .. x[3]
      if x[2] == "libssh" then libssh = libssh + 1 end
    end
    local all = table.concat(text, "\n")
    assert.matches("hop 3 sclt3@10.231.3.13:22 ready in %d+ ms %(tcp", all)
    assert.matches("kex curve25519%-sha256", all)
    assert.matches("auth: the server offered publickey,password; tried", all)
    assert.is_true(libssh > 0, "no libssh line at level 3")
    for _, secret in pairs(H.lab.passwords) do assert.is_nil(all:find(secret, 1, true), "a password was said") end
  end)

  it("sshlua -v says how each hop connected, on stderr", function()
    local out, rc = H.sh(H.build .. "/sshlua -v -r exec -i " .. H.lab.ssh_config .. " t3 -- true 2>&1 >/dev/null")
    assert.are.equal(0, rc, out)
    assert.matches("%[hop 3 sclt3@10.231.3.13:22%] ready in", out)
    local version = H.sh(H.build .. "/sshlua -v")
    assert.matches("^sshlua ", version)
  end)
end)
