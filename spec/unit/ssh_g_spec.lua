-- unit: the effective configuration (sshchain.config.effective, `sshlua -G`) against OpenSSH's own
-- `ssh -G` (the oracle), over a generated corpus of configs: Host and Match blocks of every
-- criterion, negation, tokens, ~, ${ENV}, Include, first-value-wins, ProxyJump against
-- ProxyCommand, and the algorithm lists' + - ^ forms. Field by field, for several hosts each.
require "sshchain"
local config = require "sshchain.config"

local FIELDS = { "hostname", "user", "port", "identityfile", "certificatefile", "proxyjump", "proxycommand",
  "userknownhostsfile", "globalknownhostsfile", "stricthostkeychecking", "identitiesonly", "identityagent",
  "forwardagent", "connecttimeout", "serveraliveinterval", "serveralivecountmax", "kexalgorithms",
  "hostkeyalgorithms", "ciphers", "macs", "pubkeyacceptedalgorithms", "sendenv" }

local HOSTS = { "alpha", "beta.example", "Gamma", "10.1.2.3", "web-7" }
local N_CONFIGS = tonumber(os.getenv("SSH_G_CORPUS") or "") or 300

local function have_ssh()
  local ok = os.execute("ssh -V >/dev/null 2>&1")
  return ok == true
end

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- "keyword value" lines into keyword -> list of values
local function parse_dump(text)
  local t = {}
  for line in text:gmatch("[^\n]+") do
    local k, v = line:match("^(%S+) (.*)$")
    if k then
      t[k] = t[k] or {}
      t[k][#t[k] + 1] = v
    end
  end
  return t
end

local function pick(r, list) return list[r(#list)] end

local OPTIONS = {
  function(r) return "HostName " .. pick(r, { "%h.internal", "Real-%h", "fixed.example", "%h", "10.9.8.7" }) end,
  function(r) return "User " .. pick(r, { "u1", "u2", "ops" }) end,
  function(r) return "Port " .. pick(r, { "22", "2200", "2222" }) end,
  function(r) return "IdentityFile " .. pick(r, { "~/.ssh/id_%h", "%d/k_%r", "/keys/%u-%p", "~/.ssh/plain", "/k/%%x" }) end,
  function(r) return "CertificateFile " .. pick(r, { "~/.ssh/c_%h-cert.pub", "/certs/%r.pub" }) end,
  function(r) return "ProxyJump " .. pick(r, { "j1", "u@j2:2222", "none", "j1,j2" }) end,
  function(r) return "ProxyCommand " .. pick(r, { "nc %h %p", "none", "ssh -W %h:%p j1", "/usr/bin/nc -q0 %h %p" }) end,
  function(r) return "UserKnownHostsFile " .. pick(r, { "~/.ssh/kh_%h", "%d/a %d/b", "/kh/%C", "/kh/%n-%p-%r", "/kh/${HOME}/x" }) end,
  function(r) return "GlobalKnownHostsFile " .. pick(r, { "/etc/g1 /etc/g2", "/etc/only" }) end,
  function(r) return "StrictHostKeyChecking " .. pick(r, { "yes", "no", "ask", "accept-new", "off" }) end,
  function(r) return "IdentitiesOnly " .. pick(r, { "yes", "no" }) end,
  function(r) return "IdentityAgent " .. pick(r, { "none", "SSH_AUTH_SOCK", "~/agent.%h", "/run/a-%u-%p" }) end,
  function(r) return "ForwardAgent " .. pick(r, { "yes", "no" }) end,
  function(r) return "ConnectTimeout " .. pick(r, { "5", "0", "30" }) end,
  function(r) return "ServerAliveInterval " .. pick(r, { "10", "0", "3" }) end,
  function(r) return "ServerAliveCountMax " .. pick(r, { "2", "7" }) end,
  function(r) return "KexAlgorithms " .. pick(r, { "+diffie-hellman-group14-sha1", "-*sha1,ecdh*",
    "^curve25519-sha256", "curve25519-sha256,diffie-hellman-group14-sha1" }) end,
  function(r) return "HostKeyAlgorithms " .. pick(r, { "+ssh-rsa", "^ssh-rsa", "ssh-ed25519,rsa-sha2-256", "-ecdsa*",
    "ssh-ed25519*" }) end,
  function(r) return "Ciphers " .. pick(r, { "aes128-ctr", "+aes128-cbc", "-chacha*", "^aes256-gcm@openssh.com" }) end,
  function(r) return "MACs " .. pick(r, { "hmac-sha1", "+hmac-md5", "^hmac-sha2-256", "-umac*" }) end,
  function(r) return "PubkeyAcceptedAlgorithms " .. pick(r, { "+ssh-rsa", "-ssh-rsa*,rsa*" }) end,
  function(r) return "HostKeyAlias " .. pick(r, { "MiXeD", "alias%h" }) end,
  function(r) return "ProxyJump " .. pick(r, { "10.0.0.1", "ssh://u@j:2200,k", "j1,ssh://x:99", "u@[::1]:22" }) end,
  function(r) return pick(r, { "ConnectTimeout none", "ServerAliveInterval 1m30s", "ConnectTimeout 1h" }) end,
  function(r) return pick(r, { "BatchMode yes", "ForwardAgent no", "ForwardAgent ~/fwd_%h" }) end,
  function(r) return "UserKnownHostsFile " .. pick(r, { "/k=%k_h=%h_n=%n_r=%r_p=%p_C=%C", "none", '"/with space/kh"' }) end,
  function(r) return pick(r, { "Port=2201", "hOsTnAmE=MiXeD.%h", "User \"q u\"", "Port 2202 # a comment",
    "IdentityFile 'single quoted'", "ProxyCommand sh -c \"nc %h %p\" # raw" }) end,
  -- from a review: quoting, raw values, none forms, lists
  function(r) return pick(r, { 'ProxyJump "j"', "ProxyJump none # c", "ProxyJump j:", "ProxyJump ssh://j/",
    "ProxyJump first.user@corp@jump:2222", "ProxyCommand == nc %h", "UserKnownHostsFile NONE",
    "Ciphers -aes*,!aes128*", "Ciphers aes128-ctr,,bogus", '"User" bob', "SendEnv LANG LC_*",
    "SendEnv -LC_*", "CanonicalizeHostname yes", "GlobalKnownHostsFile ~/g_%h ${HOME}/g2",
    "ConnectTimeout 2147483648", "ServerAliveCountMax 2147483648", "Ciphers +",
    "IdentityFile ${HOME}/id_%h", "UserKnownHostsFile /k/${}", "UserKnownHostsFile /k/${HOME",
    "ForwardAgent $a-b" }) end,
  -- addresses in their canonical form, ports by service name
  function(r) return pick(r, { "HostName 127.1", "HostName 0x7f.1", "HostName FE80:0::1", "HostName 0X7F000001",
    "HostName 123", "Port ssh", "Port +22", "ProxyJump j:ssh", "Port nosuchservice" }) end,
  -- values of keywords sshchain only says, good and bad, checked as ssh checks them
  function(r) return pick(r, { "Compression maybe", "Compression yes", "ControlMaster autoask", "ControlMaster bad",
    "RequestTTY force", "RequestTTY x", "ConnectionAttempts x", "PubkeyAuthentication unbound",
    "CanonicalizeHostname none", "AddressFamily inet6", "AddressFamily x", "Tunnel point-to-point",
    "SessionType x", "NumberOfPasswordPrompts x", "ForwardX11Timeout x", "LogLevel DEBUG3", "LogLevel x",
    "GSSAPIAuthentication maybe", "FingerprintHash md5", "FingerprintHash x", "StdinNull maybe" }) end,
  -- lines both must refuse (a few per corpus)
  function(r) return pick(r, { "Nonsense x", "Port 0", "User a b", "Ciphers aes*", "StrictHostKeyChecking maybe",
    "ServerAliveCountMax x", "ConnectTimeout NONE", "HostName %p", "UserKnownHostsFile none /x",
    "IdentityAgent ${SSH_G_UNDEFINED_VAR}", "ProxyJump u@j:0", 'IdentityFile "unterminated' }) end,
}

local HEADERS = {
  -- names only: consecutive blocks of these are looked up through an index (config.lua)
  function(r) return "Host " .. pick(r, { "alpha", "Gamma", "web-7 alpha", "10.1.2.3", "beta.example", "gamma web-7" }) end,
  function(r) return "Host " .. pick(r, { "alpha", "Gamma", "beta.example alpha", "web-7" }) end,
  function(r) return "Host " .. pick(r, { "*", "alpha", "a*", "!beta* *", "*.example", "web-?", "gamma", "10.1.*",
    "alpha beta.example", "!alpha" }) end,
  function(r) return "Match host " .. pick(r, { "alpha", "*.internal", "real-*", "fixed.example", "!gamma,*" }) end,
  function(r) return "Match originalhost " .. pick(r, { "alpha", "Gamma", "web-*" }) end,
  function(r) return "Match user " .. pick(r, { "u1", "root", "ops,u2" }) end,
  function(r) return "Match localuser " .. pick(r, { "root", "nobody" }) end,
  function(r) return "Match exec " .. pick(r, { "true", "false", '"test %h = alpha"', '"test %n = web-7"' }) end,
  function() return "Match all" end,
  function(r) return "Match !host " .. pick(r, { "alpha", "*.example" }) end,
  function(r) return "Match host " .. pick(r, { "alpha", "*" }) .. " user " .. pick(r, { "u1", "root" }) end,
  function(r) return "Match final host " .. pick(r, { "*.internal", "alpha" }) end,
  function() return "Match canonical all" end,
  function(r) return pick(r, { "Match canonical host *.internal", 'Match host alpha #"x', 'Match exec "true" # c' }) end,
  function(r) return "Match exec " .. pick(r, { '"test %C = x"', '"test %k = mixed"', '"true %d %u %i %L %l %r %p"' }) end,
  function(r) return pick(r, { "Match host=alpha", "Match !all", "Match host alpha all", "Match user root exec false host *" }) end,
  -- headers both must refuse
  function(r) return pick(r, { "Match bogus x", "Match host", "Match all host x", "Match canonical final all", "Host" }) end,
}

-- A config (and its included file) from the generator r; returns the main file's text.
local function generate(r, dir, i)
  local lines = {}
  local function options(n)
    for _ = 1, n do lines[#lines + 1] = "  " .. pick(r, OPTIONS)(r) end
  end
  if r(3) == 1 then options(r(2)) end -- before any Host line: for every host
  for _ = 1, r(5) do
    local k = r(10)
    if k == 1 then
      local inc = ("%s/inc%d"):format(dir, i)
      local f = assert(io.open(inc, "w"))
      f:write(pick(r, HEADERS)(r), "\n  ", pick(r, OPTIONS)(r), "\n  ", pick(r, OPTIONS)(r), "\n")
      f:close()
      lines[#lines + 1] = pick(r, HEADERS)(r)
      lines[#lines + 1] = "  Include " .. inc
      options(1)
    elseif k == 2 then
      lines[#lines + 1] = "IgnoreUnknown Foo*"
      lines[#lines + 1] = pick(r, HEADERS)(r)
      lines[#lines + 1] = "  FooBar yes"
      options(1)
    else
      lines[#lines + 1] = pick(r, HEADERS)(r)
      options(1 + r(4))
    end
  end
  return table.concat(lines, "\n") .. "\n"
end

describe("sshlua -G against ssh -G", function()
  local dir
  setup(function()
    dir = os.getenv("SSH_G_DIR") or os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
  end)
  teardown(function() if not os.getenv("SSH_G_DIR") then os.execute("rm -rf " .. sh_quote(dir)) end end)

  it("prints what ssh -G prints, field by field, over a generated corpus of configs", function()
    if not have_ssh() then pending("no ssh client") return end
    -- the corpus is the same every run (a fixed seed per config), and not a trivial one: it
    -- must have configs that ssh takes and that differ from the defaults
    local old_unsupported = config.on_unsupported
    config.on_unsupported = function() end
    local mismatches, compared, errors_both, took = {}, 0, 0, 0
    local ok_err, nontrivial = pcall(function()
      for i = 1, N_CONFIGS do
        local seed = 7919 * i
        local state = seed
        local function r(n) -- a small LCG, the same on every Lua
          state = (state * 1103515245 + 12345) % 2147483648
          return state % n + 1
        end
        config.flush()
        local path = ("%s/c%d"):format(dir, i)
        local f = assert(io.open(path, "w"))
        f:write(generate(r, dir, i))
        f:close()
        for _, host in ipairs(HOSTS) do
          local p = io.popen(("ssh -G -F %s %s 2>/dev/null </dev/null"):format(sh_quote(path), sh_quote(host)))
          local theirs_text = p:read("a")
          local their_ok = p:close()
          local ours_e, ours_err = config.effective(host, { config = path })
          if not their_ok or theirs_text == "" then
            if ours_e then
              mismatches[#mismatches + 1] = ("%s host %s: ssh -G fails, sshchain does not"):format(path, host)
            else
              errors_both = errors_both + 1
            end
          elseif not ours_e then
            mismatches[#mismatches + 1] = ("%s host %s: sshchain fails (%s), ssh -G does not"):format(path, host, ours_err)
          else
            local theirs, ours = parse_dump(theirs_text), parse_dump(config.dump(ours_e))
            for _, k in ipairs(FIELDS) do
              local a, b = table.concat(theirs[k] or {}, "|"), table.concat(ours[k] or {}, "|")
              compared = compared + 1
              if a ~= b then
                mismatches[#mismatches + 1] = ("%s host %s: %s: ssh -G %q, sshchain %q"):format(path, host, k, a, b)
              end
            end
            took = took + 1
          end
        end
      end
    end)
    config.on_unsupported = old_unsupported
    assert(ok_err, nontrivial)
    if #mismatches > 0 then
      local shown = {}
      for j = 1, math.min(#mismatches, 12) do shown[j] = mismatches[j] end
      error(("%d mismatches over %d fields compared:\n%s"):format(#mismatches, compared, table.concat(shown, "\n")))
    end
    assert.is_true(took > N_CONFIGS, "too few configs that ssh takes: " .. took)
    assert.is_true(errors_both > 0, "the corpus must have configs both refuse")
  end)

  it("sshlua -G prints the same lines as ssh -G for these fields, and fails as it does", function()
    if not have_ssh() then pending("no ssh client") return end
    local bin = (os.getenv("SSHCHAIN_BUILD") or "build") .. "/sshlua"
    local path = dir .. "/cli"
    local f = assert(io.open(path, "w"))
    f:write("Host t\n  HostName %h.lab\n  User ops\n  Port 2201\n  ProxyJump j1\n  IdentityFile ~/.ssh/k_%h\n")
    f:close()
    local p = io.popen(("%s -G -F %s t"):format(bin, sh_quote(path)))
    local ours = parse_dump(p:read("a"))
    assert.is_true(p:close())
    p = io.popen(("ssh -G -F %s t 2>/dev/null"):format(sh_quote(path)))
    local theirs = parse_dump(p:read("a"))
    p:close()
    for _, k in ipairs(FIELDS) do
      assert.are.same(theirs[k], ours[k], k)
    end
    f = assert(io.open(path, "w"))
    f:write("Host t\n  Nonsense yes\n")
    f:close()
    p = io.popen(("%s -G -F %s t 2>&1"):format(bin, sh_quote(path)))
    local out = p:read("a")
    local ok, _, code = p:close()
    assert.is_falsy(ok)
    assert.are.equal(255, code)
    assert.matches("line 2: Bad configuration option: nonsense", out, 1, true)
  end)
end)
