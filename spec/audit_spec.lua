-- audit_spec: the defects an audit of faults, bad input and secrets found (issue 15), one block
-- per item, each failing before its fix. (Items that need no server are in spec/unit and the C
-- tests: numeric and NUL spec fields, temporary names, C1 controls, the linear ssh_config.)
local sshchain = require "sshchain"
local H = require "helper"

local function ns_exec(ns, cmd)
  return os.execute(("ip netns exec %s sh -c %s"):format(ns, sshchain.shell_quote(cmd)))
end

describe("audit: secrets", function()
  local s
  setup(function() s = assert(sshchain.connect(H.spec("j1big"))) end)
  teardown(function()
    s:close()
    H.assert_no_leaks(sshchain)
  end)

  it("1. sudo_password answers only sudo's own prompt, never another program's", function()
    local pw = "pw-" .. os.time()
    local r = assert(s:exec([[printf 'Enter your VPN password: '; read -r -t 2 x; printf '\n[%s]\n' "$x"]],
      { sudo_password = pw, timeout = 10 }))
    assert.is_nil(r.stdout:find(pw, 1, true))
    assert.matches("%[%]", r.stdout)
  end)

  it("1. sudo is answered once, and its prompt never reaches the output", function()
    local t = assert(sshchain.connect(H.chain("t3")))
    local r = assert(t:exec("sudo -k; sudo id -u; echo done", { sudo_password = H.lab.t3.password, timeout = 20 }))
    assert.matches("^0\r?\ndone\r?\n$", r.stdout)
    H.failed({ code = "EAUTH", stage = "exec", reason = "denied" },
      t:exec("sudo -k; sudo id -u", { sudo_password = "wrong", timeout = 20 }))
    t:close()
  end)

  local function env_not_in_ps(opts)
    local secret = "s3cr3t-" .. os.time()
    local r = assert(s:exec([[ps -eww -o args=; echo --; printf '%s|%s\n' "$SECRET" "$LC_SSHCHAIN"]],
      { env = { SECRET = secret, LC_SSHCHAIN = "lc-" .. secret }, pty = opts.pty, timeout = 10 }))
    local listing, values = r.stdout:match("^(.*)\n%-%-\r?\n(.-)\r?\n$")
    assert.is_truthy(listing, r.stdout)
    assert.are.equal(secret .. "|lc-" .. secret, values)
    assert.is_nil(listing:find(secret, 1, true), "the secret is on a command line")
  end

  it("2. env values reach the command without appearing in ps (env requests, else stdin)", function()
    env_not_in_ps({})
  end)

  it("2. the same on a pty (the wrapper reads them with echo off)", function()
    env_not_in_ps({ pty = true })
  end)

  it("2. the exports never take the command's stdin, nor its stdin the exports' place", function()
    local r = assert(s:exec([[cat; printf '[%s]' "$SECRET"]], { stdin = "one\ntwo\n", env = { SECRET = "x y" } }))
    assert.are.equal("one\ntwo\n[x y]", r.stdout)
  end)

  it("2. on a pty, values with control characters arrive intact and run nothing", function()
    local v = "a\21b\rc\3d'\"$(touch /tmp/sshchain-pwned)\n"
    local r = assert(s:exec([[printf '%s' "$V" | od -An -tx1 | tr -d ' \n'; echo]], { env = { V = v }, pty = true }))
    local hex = v:gsub(".", function(c) return ("%02x"):format(c:byte()) end)
    assert.are.equal(hex, (r.stdout:gsub("%s+$", "")))
    assert.is_nil(io.open("/tmp/sshchain-pwned"))
  end)
end)

describe("audit: verify before the final name", function()
  after_each(function() H.assert_no_leaks(sshchain) end)

  it("3. a download whose verify fails leaves the old file as it was, and no temporary file", function()
    local evil = assert(sshchain.connect({ H.spec("j1"), H.spec("j2"), H.spec("evil") }))
    local dir = H.tmpname()
    os.execute("mkdir -p " .. dir)
    H.writefile(dir .. "/liar", "old content\n")
    H.failed({ code = "EIO", stage = "download", reason = "verify" },
      evil:download("/tmp/liar", dir .. "/liar", { verify = true }))
    assert.are.equal("old content\n", H.readfile(dir .. "/liar"))
    assert.are.equal("liar\n", H.sh("ls -A " .. dir))
    os.execute("rm -rf " .. dir)
    evil:close()
  end)
end)

describe("audit: host keys said out loud", function()
  local warnings, saved
  before_each(function()
    warnings, saved = {}, sshchain.settings.on_warning
    sshchain.settings.on_warning = function(m) warnings[#warnings + 1] = m end
  end)
  after_each(function()
    sshchain.settings.on_warning = saved
    H.assert_no_leaks(sshchain)
  end)

  it("4. accept-new says 'Permanently added', as ssh does", function()
    local kh = H.tmpname()
    local s = assert(sshchain.connect(H.spec("j1", { known_hosts = kh, host_key = "accept-new" })))
    s:close()
    assert.are.same({ "Warning: Permanently added '10.231.1.2' (ED25519) to the list of known hosts." }, warnings)
    warnings = {}
    s = assert(sshchain.connect(H.spec("j1", { known_hosts = kh, host_key = "accept-new" })))
    s:close()
    assert.are.same({}, warnings) -- known now: nothing to say
    os.remove(kh)
  end)

  it("4. host_key = 'off' warns that nothing was checked", function()
    local s = assert(sshchain.connect(H.spec("j1big", { known_hosts = "/nonexistent", host_key = "off" })))
    s:close()
    assert.are.equal(1, #warnings)
    assert.matches("not checked", warnings[1])
    assert.matches("SHA256:", warnings[1])
  end)

  it("4. a known_hosts file made under umask 000 is private (0600)", function()
    local kh = H.tmpname()
    local script = ("local s = assert(require('sshchain').connect{host='10.231.1.2', user='sclj1', password='j1-secret', known_hosts=%q, host_key='accept-new'}) s:close()")
      :format(kh)
    local _, rc = H.sh(("umask 000; %s/sshlua -e %s 2>&1"):format(H.build, sshchain.shell_quote(script)))
    assert.are.equal(0, rc)
    assert.are.equal("600\n", H.sh("stat -c %a " .. kh))
    os.remove(kh)
  end)

  it("4 (issue 11). a @revoked key is refused whatever other line knows it", function()
    local kh = H.tmpname()
    local key = H.sh("ssh-keygen -F 10.231.1.2 -f " .. H.lab.known_hosts):match("\n10%.231%.1%.2 (%S+ %S+)")
    assert.is_truthy(key)
    H.writefile(kh, "10.231.1.2 " .. key .. "\n@revoked * " .. key .. "\n")
    H.failed({ code = "EHOSTKEY", stage = "host key", reason = "revoked", hop = 1 },
      sshchain.connect(H.spec("j1", { known_hosts = kh })))
    os.remove(kh)
  end)
end)

describe("audit: faults name the hop that failed", function()
  -- hop 2 (j2) goes silent: its link to j1 is taken down, in the lab's own namespace
  local function link(state) ns_exec(H.lab.ns.j1, "ip link set v-j2 " .. state) end
  after_each(function()
    link("up")
    sshchain.sleep(0.2)
    H.assert_no_leaks(sshchain)
  end)

  it("6. every session under a dead jump fails naming it, not itself (5 runs)", function()
    for run = 1, 5 do
      local chain = H.chain("t1", { keepalive = 0.5 })
      chain[1].keepalive, chain[2].keepalive = 0.5, 0.5
      local t = assert(sshchain.connect(chain))
      link("down")
      local t0 = sshchain.core.now()
      repeat sshchain.sleep(0.1) until t:state() ~= "ready" or sshchain.core.now() - t0 > 15
      local state, msg, code, err = t:state()
      link("up")
      assert.are.equal("failed", state, "run " .. run)
      assert.are.equal("ECLOSED", code, msg)
      assert.are.equal(2, err.hop, ("run %d: %s"):format(run, msg))
      t:close()
      sshchain.sleep(0.3)
    end
  end)

  it("6. twenty sessions under the dead jump all name it", function()
    local j2 = assert(sshchain.connect({ H.spec("j1", { keepalive = 0.5 }), H.spec("j2", { keepalive = 0.5 }) }))
    local kids = {}
    for i = 1, 20 do
      local n = H.lab.nodes[(i - 1) % #H.lab.nodes + 1]
      kids[i] = assert(j2:connect({ host = n.host, user = n.user, identity = n.identity,
        known_hosts = H.lab.known_hosts, timeout = 10, keepalive = 0.5 }))
    end
    link("down")
    local t0 = sshchain.core.now()
    local function all_failed()
      for _, k in ipairs(kids) do if k:state() == "ready" then return false end end
      return true
    end
    repeat sshchain.sleep(0.1) until all_failed() or sshchain.core.now() - t0 > 15
    link("up")
    for i, k in ipairs(kids) do
      local _, msg, _, err = k:state()
      assert.are.equal(2, err and err.hop, ("session %d: %s"):format(i, tostring(msg)))
      k:close()
    end
    j2:close()
  end)

  it("6. a new connect through a silent shared jump times out naming the jump", function()
    local j2 = assert(sshchain.connect({ H.spec("j1"), H.spec("j2") }))
    link("down")
    local msg, err = H.failed({ code = "ETIMEDOUT", stage = "hop channel", reason = "parent" },
      j2:connect(H.spec("t1", { timeout = 2 })))
    link("up")
    assert.are.equal(2, err.hop, msg)
    assert.is_truthy(msg:find("hop 2 ", 1, true), msg)
    j2:close()
  end)
end)

describe("audit: channel slots", function()
  local saved
  before_each(function() saved = sshchain.settings.max_connections end)
  after_each(function()
    sshchain.settings.max_connections = saved
    H.assert_no_leaks(sshchain)
  end)

  it("7. an exec's timeout covers the wait for a channel slot", function()
    sshchain.settings.max_connections = 1
    local s = assert(sshchain.connect(H.spec("j1", { max_sessions = 1 })))
    local busy = sshchain.spawn(function() return s:exec("sleep 6") end)
    sshchain.sleep(0.5)
    local t0 = sshchain.core.now()
    H.failed({ code = "ETIMEDOUT", stage = "exec", reason = "timeout" }, s:exec("true", { timeout = 1 }))
    assert.is_true(sshchain.core.now() - t0 < 4.5, "waited for the slot past its timeout")
    assert(busy:wait())
    s:close()
  end)

  it("7. max_sessions of 0, -1 or NaN is refused at once", function()
    for _, v in ipairs { 0, -1, 0 / 0 } do
      assert.has_error(function() sshchain.connect(H.spec("j1", { max_sessions = v })) end)
    end
  end)
end)

describe("audit: bad input", function()
  after_each(function() H.assert_no_leaks(sshchain) end)

  it("8. out-of-range numbers and NUL bytes in a spec raise naming the field", function()
    for field, v in pairs { port = 1e10, timeout = -1, keepalive = 1e300, user = "scl\0j1", password = "j1-secret\0x" } do
      local ok, err = pcall(sshchain.connect, H.spec("j1", { [field] = v }))
      assert.is_false(ok, field)
      assert.matches("'" .. field .. "'", err)
    end
    assert.has_error(function() sshchain.connect(H.spec("j1", { identity = { 42 } })) end)
  end)

  it("11. SOCKS5: data sent with the CONNECT request is not lost", function()
    local j2 = assert(sshchain.connect({ H.spec("j1"), H.spec("j2") }))
    local f = assert(j2:socks {})
    local host, port = H.lab.http.t1:match("^(.+):(%d+)$")
    local a, b, c, d = host:match("(%d+)%.(%d+)%.(%d+)%.(%d+)")
    local py = ([[python3 -c "
import socket, struct
s = socket.create_connection(('127.0.0.1', %d))
req = b'\x05\x01\x00' + b'\x05\x01\x00\x01' + bytes([%s, %s, %s, %s]) + struct.pack('>H', %s)
s.sendall(req + b'GET /index.html HTTP/1.0\r\n\r\n')   # all in one write, as pipelining clients do
s.settimeout(5)
data = b''
while True:
    chunk = s.recv(65536)
    if not chunk: break
    data += chunk
print(data.split(b'\r\n\r\n', 1)[-1].decode(), end='')
"]]):format(f.port, a, b, c, d, port)
    local out, rc = H.bg(sshchain, py, 20)
    assert.are.equal(0, rc, out)
    assert.are.equal("sshchain lab t1\n", out)
    f:close()
    j2:close()
  end)

  it("12. kept output past max_output fails EIO naming it; streamed output has no cap", function()
    local s = assert(sshchain.connect(H.spec("j1big")))
    H.failed({ code = "EIO", stage = "exec", reason = "limit" },
      s:exec("head -c 3000000 /dev/zero", { max_output = 1000000 }))
    H.failed({ code = "EIO", stage = "exec", reason = "limit" },
      s:exec("head -c 3000000 /dev/zero >&2", { max_output = 1000000, on_stdout = function() end }))
    local n = 0
    assert(s:exec("head -c 3000000 /dev/zero", { max_output = 1000000, on_stdout = function(c) n = n + #c end }))
    assert.are.equal(3000000, n)
    assert.are.equal(3000000, #assert(s:exec("head -c 3000000 /dev/zero")).stdout) -- default: 64 MiB
    s:close()
  end)

  it("13. an SCP name with a newline fails, pointing to SFTP, instead of landing renamed", function()
    local s = assert(sshchain.connect(H.chain("t4")))
    assert(s:exec([[rm -rf nl13; mkdir nl13; printf abc > "nl13/new
line"]]))
    local dir = H.tmpname()
    os.execute("mkdir -p " .. dir)
    local msg = H.failed({ code = "EIO", stage = "download" }, s:download("nl13", dir, { recursive = true }))
    assert.matches('protocol = "sftp"', msg)
    assert(s:download("nl13", dir, { recursive = true, protocol = "sftp" }))
    assert.are.equal("abc", H.readfile(dir .. "/nl13/new\nline"))
    os.execute("rm -rf " .. dir)
    s:exec("rm -rf nl13")
    s:close()
  end)
end)

describe("audit: found trying it as a new user", function()
  local sshlua, inv
  setup(function()
    sshlua = H.build .. "/sshlua"
    inv = ("env SSHCHAIN_INVENTORY=%s $(sed 's/^export //' %s) "):format(H.lab.inventory, H.lab.inventory_env)
  end)

  it("14. the copy recipe ends well after a small copy", function()
    local src = H.tmpname()
    H.writefile(src, "tiny\n")
    local out, rc = H.sh(inv .. sshlua .. " -r copy " .. src .. " t1:sshchain-tiny.txt 2>&1")
    assert.are.equal(0, rc, out)
    assert.matches("1 of 1 copies done", out)
    os.remove(src)
  end)

  it("14. Ctrl-C during a copy exits 130 without a traceback, leaving no partial file", function()
    local t1 = assert(sshchain.connect(H.chain("t1")))
    assert(t1:exec("truncate -s 8G /tmp/sshchain-big"))
    local dir = H.tmpname()
    os.execute("mkdir -p " .. dir)
    local log = dir .. ".log"
    os.execute(("sh -c '%s%s -r copy t1:/tmp/sshchain-big %s/ > %s 2>&1 & echo $! > %s.pid; wait $!; echo rc=$? >> %s' &")
      :format(inv:gsub("'", "'\\''"), sshlua, dir, log, log, log))
    local pid
    for _ = 1, 100 do -- until the download's temporary file is there
      local f = io.open(log .. ".pid")
      pid = f and f:read("n")
      if f then f:close() end
      if pid and H.sh("ls -A " .. dir) ~= "" then break end
      os.execute("sleep 0.1")
    end
    assert.is_truthy(pid)
    os.execute("kill -INT " .. pid)
    local text
    for _ = 1, 100 do
      text = H.readfile(log) or ""
      if text:find("rc=") then break end
      os.execute("sleep 0.1")
    end
    assert.matches("rc=130", text)
    assert.is_nil(text:find("traceback", 1, true), text)
    assert.are.equal("", H.sh("ls -A " .. dir))
    os.execute("rm -rf " .. dir .. " " .. log .. " " .. log .. ".pid")
    t1:exec("rm -f /tmp/sshchain-big")
    t1:close()
  end)

  it("15. sshlua --help and -h print the usage; recipe examples name files that exist", function()
    for _, flag in ipairs { "--help", "-h" } do
      local out, rc = H.sh(sshlua .. " " .. flag .. " 2>&1")
      assert.are.equal(0, rc, out)
      assert.matches("^usage: sshlua", out)
    end
    for _, r in ipairs { "exec", "copy", "forward", "stress", "tree" } do
      local out = H.sh(sshlua .. " -r " .. r .. " --help")
      assert.is_nil(out:find(" lab/inventory.lua", 1, true), r)
    end
  end)

  it("16. exec --lines shows each line as it arrives", function()
    local out = H.tmpname()
    os.execute(("(%s%s -r exec --lines t1 -- 'echo first; sleep 3; echo second' < /dev/null > %s 2>/dev/null) &")
      :format(inv, sshlua, out))
    local seen
    local t0 = sshchain.core.now()
    repeat
      os.execute("sleep 0.1")
      seen = H.readfile(out) or ""
    until seen:find("first", 1, true) or sshchain.core.now() - t0 > 10
    assert.are.equal("t1: first\n", seen) -- the first line, while the command still runs
    t0 = sshchain.core.now()
    repeat
      os.execute("sleep 0.1")
      seen = H.readfile(out) or ""
    until seen:find("second", 1, true) or sshchain.core.now() - t0 > 10
    assert.are.equal("t1: first\nt1: second\n", seen)
    os.remove(out)
  end)
end)
