-- forward_spec: local forwards and SOCKS5 through the jump chain, served by the event loop.
local sshchain = require "sshchain"
local H = require "helper"

local function curl(port, path, extra)
  return ("curl -sS -m 10 %s http://127.0.0.1:%d%s"):format(extra or "", port, path)
end

describe("port forwarding", function()
  local j2
  before_each(function() j2 = assert(sshchain.connect({ H.spec("j1"), H.spec("j2") })) end)
  after_each(function()
    j2:close()
    H.assert_no_leaks(sshchain)
  end)

  it("forwards the web server of every target to its own local port, fetched concurrently", function()
    local names = { "t1", "t2", "t3", "t4" }
    local fwds, cmds = {}, {}
    for i, n in ipairs(names) do
      local host, port = H.lab.http[n]:match("^(.+):(%d+)$")
      fwds[i] = assert(j2:forward { to_host = host, to_port = tonumber(port) })
      cmds[i] = curl(fwds[i].port, "/index.html") .. " > /tmp/sshchain-fwd-" .. n
    end
    local _, rc = H.bg(sshchain, table.concat(cmds, " & ") .. "; wait")
    assert.are.equal(0, rc)
    for i, n in ipairs(names) do
      assert.are.equal("sshchain lab " .. n .. "\n", H.readfile("/tmp/sshchain-fwd-" .. n))
      os.remove("/tmp/sshchain-fwd-" .. n)
      fwds[i]:close()
    end
  end)

  it("carries a 1 MiB download intact", function()
    local f = assert(j2:forward { to_host = "10.231.3.11", to_port = 8080 })
    local out = H.bg(sshchain, curl(f.port, "/big.bin") .. " | sha256sum")
    assert.are.equal(H.lab.big_sha256.t1, out:match("^(%x+)"))
    f:close()
  end)

  it("carries 16 MiB intact to a reader slower than the chain (bytes wait in the window)", function()
    -- the forward's socket fills: what arrives then waits in libssh's buffer for the next reads,
    -- after the bytes passed on as they arrived, in order
    local name = "slow-" .. tostring(os.time()) .. ".bin"
    local path = "/tmp/sshchain-lab/www/t1/" .. name
    assert(os.execute("head -c 16777216 /dev/urandom > " .. path .. " && chmod 644 " .. path))
    local want = H.sh("sha256sum " .. path):match("^(%x+)")
    local f = assert(j2:forward { to_host = "10.231.3.11", to_port = 8080 })
    local out = H.bg(sshchain, curl(f.port, "/" .. name, "--limit-rate 16M -m 30") .. " | sha256sum", 40)
    os.remove(path)
    assert.are.equal(want, out:match("^(%x+)"))
    f:close()
  end)

  it("serves 100 concurrent HTTP requests through one forward", function()
    local f = assert(j2:forward { to_host = "10.231.3.12", to_port = 8080 })
    local out, rc = H.bg(sshchain, "seq 100 | xargs -P 100 -I{} " .. curl(f.port, "/index.html?{}")
      .. " | grep -c 'sshchain lab t2'", 60)
    assert.are.equal(0, rc, out)
    assert.are.equal("100\n", out)
    assert.are.equal(100, f:stats().accepted)
    f:close()
  end)

  it("propagates half-close: a client that shuts down writing still gets the whole response", function()
    local f = assert(j2:forward { to_host = "10.231.3.13", to_port = 8080 })
    local py = ([[python3 -c "
import socket
s = socket.create_connection(('127.0.0.1', %d))
s.sendall(b'GET /big.bin HTTP/1.0\r\n\r\n')
s.shutdown(socket.SHUT_WR)
data = b''
while True:
    b = s.recv(65536)
    if not b: break
    data += b
print(len(data.split(b'\r\n\r\n', 1)[1]))
"]]):format(f.port)
    local out, rc = H.bg(sshchain, py)
    assert.are.equal(0, rc, out)
    assert.are.equal(tostring(H.lab.big_size) .. "\n", out)
    f:close()
  end)

  it("reports a refused destination through on_error and keeps serving", function()
    local errors = {}
    local bad = assert(j2:forward { to_host = "10.231.3.99", to_port = 8080,
      on_error = function(msg, code, err) errors[#errors + 1] = { msg, code, err } end })
    local _, rc = H.bg(sshchain, curl(bad.port, "/"))
    assert.are_not.equal(0, rc)
    sshchain.sleep(0.1)
    assert.are.equal(1, #errors)
    assert.are.equal("ECHANNEL", errors[1][2])
    assert.are.same({ "forward", "channel refused", 2 },
      { errors[1][3].stage, errors[1][3].reason, errors[1][3].hop })
    assert.is_true(bad:is_open())
    _, rc = H.bg(sshchain, curl(bad.port, "/"))
    assert.are_not.equal(0, rc)
    assert.are.equal(2, bad:stats().errors)
    bad:close()
  end)

  it("fails with EIO naming the port when the local port is in use", function()
    local a = assert(j2:forward { to_host = "10.231.3.11", to_port = 8080 })
    local msg = H.failed({ code = "EIO", stage = "forward" },
      j2:forward { port = a.port, to_host = "10.231.3.11", to_port = 8080 })
    assert.matches(":" .. a.port, msg) -- the port in use is named
    a:close()
  end)

  it("a hop that forbids forwarding fails each connection with ECHANNEL, not the forward", function()
    local nofwd = assert(j2:connect(H.spec("j2nofwd", { host = "10.231.2.2" })))
    local codes = {}
    local f = assert(nofwd:forward { to_host = "10.231.3.11", to_port = 8080,
      on_error = function(_, code) codes[#codes + 1] = code end })
    H.bg(sshchain, curl(f.port, "/"))
    H.bg(sshchain, curl(f.port, "/"))
    sshchain.sleep(0.1)
    assert.are.same({ "ECHANNEL", "ECHANNEL" }, codes)
    assert.is_true(f:is_open())
    nofwd:close()
    assert.is_false(f:is_open()) -- closing the session closes its forwards
  end)

  it("close stops accepting", function()
    local f = assert(j2:forward { to_host = "10.231.3.11", to_port = 8080 })
    local port = f.port
    f:close()
    f:close()
    local _, rc = H.bg(sshchain, curl(port, "/"))
    assert.are_not.equal(0, rc)
  end)

  it("is a SOCKS5 proxy whose connections leave from the session", function()
    local p = assert(j2:socks {})
    local out = H.bg(sshchain, ("curl -sS -m 10 --socks5-hostname 127.0.0.1:%d http://10.231.3.12:8080/index.html"):format(p.port))
    assert.are.equal("sshchain lab t2\n", out)
    out = H.bg(sshchain, ("curl -sS -m 10 --socks5 127.0.0.1:%d http://10.231.3.14:8080/index.html"):format(p.port))
    assert.are.equal("sshchain lab t4\n", out)
    local _, rc = H.bg(sshchain, ("curl -sS -m 10 --socks5 127.0.0.1:%d http://10.231.3.99:8080/"):format(p.port))
    assert.are_not.equal(0, rc)
    p:close()
  end)
end)

describe("remote forwarding", function()
  local j2, web, webport
  setup(function()
    webport = 18000 + math.random(0, 999)
    web = H.tmpname()
    os.execute("mkdir -p " .. web .. " && echo 'served from the client' > " .. web .. "/hello.txt")
    os.execute(("python3 -m http.server %d --bind 127.0.0.1 --directory %s >/dev/null 2>&1 & echo $! > %s.pid")
      :format(webport, web, web))
    H.bg(sshchain, ("for i in $(seq 50); do curl -s 127.0.0.1:%d >/dev/null && exit 0; sleep 0.1; done; exit 1")
      :format(webport))
  end)
  teardown(function()
    os.execute("kill $(cat " .. web .. ".pid) 2>/dev/null; rm -rf " .. web .. " " .. web .. ".pid")
  end)
  before_each(function() j2 = assert(sshchain.connect({ H.spec("j1"), H.spec("j2") })) end)
  after_each(function()
    j2:close()
    H.assert_no_leaks(sshchain)
  end)

  it("carries the server's connections back to a local address (ssh -R)", function()
    local rport = 19000 + math.random(0, 999)
    local f = assert(j2:forward_remote { port = rport, to_host = "127.0.0.1", to_port = webport })
    assert.are.equal(rport, f.port)
    -- a command on j2 fetches through the forward, while this script serves it
    local results = sshchain.parallel({ 1, 2, 3 }, function()
      return assert(j2:exec(("curl -sS -m 10 http://127.0.0.1:%d/hello.txt"):format(rport))).stdout
    end)
    for _, r in ipairs(results) do assert.are.equal("served from the client\n", r.value) end
    assert.are.equal(3, f:stats().accepted)
    f:close()
    sshchain.sleep(0.2)
    -- the server stopped listening
    local r = assert(j2:exec(("curl -sS -m 5 http://127.0.0.1:%d/hello.txt"):format(rport)))
    assert.are_not.equal(0, r.status)
  end)

  it("fails with ECHANNEL when the server refuses to listen", function()
    local nofwd = assert(j2:connect(H.spec("j2nofwd", { host = "10.231.2.2" })))
    H.failed({ code = "ECHANNEL", stage = "forward", reason = "request refused", hop = 3 },
      nofwd:forward_remote { port = 19999, to_host = "127.0.0.1", to_port = webport })
    nofwd:close()
  end)
end)

describe("Unix-socket forwards", function()
  -- a line server on a Unix socket: "unix: " .. each line; ends after 30 s without a client
  local SERVER = [[
import socket, os, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8); s.settimeout(30)
print("up", flush=True)
while True:
    try: c, _ = s.accept()
    except socket.timeout: break
    f = c.makefile("rwb")
    for line in f: f.write(b"unix: " + line); f.flush()
    f.close(); c.close()
os.unlink(sys.argv[1])
]]
  -- sends text to a Unix socket (unix=true) or a local port, half-closes, prints the answer
  local function client(target, text, unix)
    local connect = unix and "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])"
      or "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))"
    return ("printf '%s' | timeout 10 python3 -c \"import socket, sys; %s; s.sendall(sys.stdin.buffer.read()); "
      .. "s.shutdown(1); sys.stdout.write(s.makefile().read())\" %s"):format(text:gsub("\n", "\\n"), connect, target)
  end

  local t1, sock
  setup(function()
    t1 = assert(sshchain.connect(H.chain("t1")))
    sock = ("/tmp/sshchain-unix-%d.sock"):format(os.time())
    assert(t1:exec("cat > /tmp/sshchain-unix.py", { stdin = SERVER }))
    local r = assert(t1:exec(("nohup python3 /tmp/sshchain-unix.py %s > /dev/null 2>&1 < /dev/null & "
      .. "for i in $(seq 50); do [ -S %s ] && break; sleep 0.1; done; test -S %s"):format(sock, sock, sock)))
    assert.are.equal(0, r.status, "the socket server on t1 did not start")
  end)
  teardown(function()
    t1:exec("pkill -f sshchain-unix.py; rm -f /tmp/sshchain-unix.py " .. sock)
    t1:close()
    H.assert_no_leaks(sshchain)
  end)

  it("forwards a local socket to a socket on the target (ssh -L path:path), 0600, removed at close", function()
    local path = H.tmpname() .. ".sock"
    local f = assert(t1:forward { path = path, to_path = sock })
    assert.are.equal(path, f.path)
    assert.is_nil(f.port)
    assert.are.equal("srw-------", H.sh("stat -c %A " .. path):match("%S+"))
    local out, rc = H.bg(sshchain, client(path, "one\ntwo\n", true))
    assert.are.equal(0, rc, out)
    assert.are.equal("unix: one\nunix: two\n", out)
    f:close()
    sshchain.sleep(0.1)
    assert.is_nil(io.open(path), "the socket file is still there")
  end)

  it("forwards a local port to a socket on the target (ssh -L port:path)", function()
    local f = assert(t1:forward { to_path = sock })
    local out, rc = H.bg(sshchain, client(f.port, "tcp\n"))
    assert.are.equal(0, rc, out)
    assert.are.equal("unix: tcp\n", out)
    f:close()
  end)

  it("reports a socket that is not there to on_error, and goes on", function()
    local seen = {}
    local f = assert(t1:forward { to_path = "/tmp/sshchain-no-such.sock",
      on_error = function(msg, code, err) seen[#seen + 1] = { msg = msg, code = code, err = err } end })
    H.bg(sshchain, client(f.port, "x\n"))
    sshchain.sleep(0.2)
    assert.are.equal(1, #seen)
    assert.are.same({ "ECHANNEL", "forward", "channel refused", 3 },
      { seen[1].code, seen[1].err.stage, seen[1].err.reason, seen[1].err.hop })
    assert.matches("/tmp/sshchain-no-such.sock", seen[1].msg, 1, true)
    assert.is_true(f:is_open())
    f:close()
  end)

  it("refuses a local path that exists, and names it; misuse raises", function()
    local path = H.tmpname()
    H.writefile(path, "keep\n")
    local r, msg, code = t1:forward { path = path, to_path = sock }
    assert.is_nil(r)
    assert.are.equal("EIO", code)
    assert.matches("cannot listen on " .. path, msg, 1, true)
    assert.are.equal("keep\n", H.readfile(path))
    os.remove(path)
    assert.has_error(function() t1:forward { to_path = sock, to_host = "x", to_port = 1 } end,
      "forward: to_path, or to_host and to_port, not both")
    assert.has_error(function() t1:forward_remote { path = "/tmp/r.sock", to_path = sock } end)
  end)

  it("forwards a port of the server to a local socket (ssh -R port:path)", function()
    local path, script = H.tmpname() .. ".sock", H.tmpname() .. ".py"
    H.writefile(script, SERVER)
    os.execute(("python3 %s %s > /dev/null 2>&1 &"):format(script, path))
    for _ = 1, 50 do
      if H.sh("test -S " .. path .. " && echo yes"):find("yes") then break end
      os.execute("sleep 0.1")
    end
    local rport = 20000 + os.time() % 10000
    local f = assert(t1:forward_remote { port = rport, to_path = path })
    local r = assert(t1:exec(client(rport, "back\n")))
    assert.are.equal("unix: back\n", r.stdout, r.stderr)
    f:close()
    os.execute("pkill -f " .. script)
    os.remove(path)
    os.remove(script)
  end)
end)

describe("forwards in sshlua", function()
  it("serve in sshchain.run() until Ctrl-C, which ends the script cleanly", function()
    local script = H.tmpname() .. ".lua"
    local out = H.tmpname()
    H.writefile(script, ([[
      local sshchain = require "sshchain"
      local s = assert(sshchain.connect{host=%q, port=%d, user=%q, password=%q, known_hosts=%q})
      local f = assert(s:forward{to_host="10.231.2.2", to_port=2222})
      io.write("listening ", f.port, "\n") io.flush()
      sshchain.run()
    ]]):format(H.lab.j1.host, H.lab.j1.port, H.lab.j1.user, H.lab.j1.password, H.lab.known_hosts))
    os.execute(("(%s/sshlua %s > %s 2>&1; echo \"rc=$?\" >> %s) &"):format(H.build, script, out, out))
    local port
    for _ = 1, 100 do
      port = (H.readfile(out) or ""):match("listening (%d+)")
      if port then break end
      os.execute("sleep 0.1")
    end
    assert.is_truthy(port, H.readfile(out))
    -- the forward answers while the script sits in run(): j2's SSH banner comes through
    local banner = H.sh("timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/" .. port .. "; head -c 7 <&3'")
    assert.are.equal("SSH-2.0", banner)
    os.execute("pkill -INT -f " .. script)
    local text
    for _ = 1, 50 do
      text = H.readfile(out) or ""
      if text:find("rc=") then break end
      os.execute("sleep 0.1")
    end
    os.remove(script)
    os.remove(out)
    assert.matches("interrupted!", text)
    assert.matches("rc=1", text)
  end)
end)
