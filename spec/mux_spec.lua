-- mux_spec: reuse across runs (sshlua -r mux, control = ...), against the lab: a mux holds j1
-- and j2, later runs open only the target through it; its socket is refused when another user
-- owns it or it is open to others; a dead mux makes runs connect directly with one line said;
-- it ends after --persist seconds without a client; a client of another user is turned away.
local sshchain = require "sshchain"
local H = require "helper"

local q = sshchain.shell_quote

--- Runs a shell command with the lab's secrets: stdout, stderr, status.
local function sh(cmd)
  local out, err = H.tmpname(), H.tmpname()
  local _, _, status = os.execute((". %s; %s > %s 2> %s < /dev/null"):format(q(H.lab.inventory_env), cmd, out, err))
  local o, e = H.readfile(out) or "", H.readfile(err) or ""
  os.remove(out)
  os.remove(err)
  return o, e, status
end

local sshlua = H.build .. "/sshlua"

--- The lab's inventory with control set on j2 (true: the default socket), in a new file.
local function inventory(control, extra)
  local text = assert(H.readfile(H.lab.inventory))
  local n
  text, n = text:gsub("(\n    j2 = {[^\n]-) },\n", function(line)
    return ("%s, control = %s%s },\n"):format(line, control == true and "true" or ("%q"):format(control),
      extra and (", " .. extra) or "")
  end)
  assert(n == 1, "j2 not found in the lab's inventory")
  local path = H.tmpname() .. ".lua"
  H.writefile(path, text)
  return path
end

describe("mux", function()
  local dir, sock, inv
  before_each(function()
    dir = H.tmpname()
    assert(os.execute("mkdir -m 700 " .. q(dir)))
    sock = dir .. "/mux"
    inv = inventory(sock)
  end)
  after_each(function()
    sh(("%s -r mux stop -i %s --control %s j2"):format(sshlua, q(inv), q(sock)))
    os.execute("rm -rf " .. q(dir))
    os.remove(inv)
  end)
  local function mux(action, extra)
    return sh(("%s -r mux %s -i %s --control %s %s j2"):format(sshlua, action, q(inv), q(sock), extra or ""))
  end

  it("holds j1 and j2: later runs open only the target through it; status and stop", function()
    local _, err, status = mux("start", "--persist 60")
    assert.are.equal(0, status, err)
    assert.matches("started %(pid %d+%)", err)
    local out, _, st = mux("status")
    assert.are.equal(0, st)
    assert.matches("^running %(pid %d+%)", out)
    local st_sock = H.sh("stat -c %a " .. q(sock))
    assert.are.equal("600", st_sock:match("%d+"))
    -- through the mux, t4 is the first hop of the run: j1 and j2 are not connected again
    local text, verbose, xst = sh(("%s -v -r exec -i %s t4 -- echo through"):format(sshlua, q(inv)))
    assert.are.equal(0, xst, verbose)
    assert.matches("through", text, 1, true)
    assert.matches("[hop 1 sclt4@10.231.3.14:22] ready", verbose, 1, true)
    assert.is_nil(verbose:find("sclj1@", 1, true))
    -- many at once through it
    local _, perr, pst = sh(("%s -r exec -i %s -q 'n*' -- true"):format(sshlua, q(inv)))
    assert.are.equal(0, pst, perr)
    local _, serr, sst = mux("stop")
    assert.are.equal(0, sst, serr)
    local out2, _, st2 = mux("status")
    assert.are.equal(1, st2)
    assert.matches("not running", out2, 1, true)
    assert.is_nil(io.open(sock))
  end)

  it("is found at its default socket by a chain whose jump host says control = true", function()
    local dinv = inventory(true)
    finally(function()
      sh(("%s -r mux stop -i %s j2"):format(sshlua, q(dinv)))
      os.remove(dinv)
    end)
    local _, err, status = sh(("%s -r mux start -i %s j2"):format(sshlua, q(dinv)))
    assert.are.equal(0, status, err)
    assert.matches("/%.ssh/sshchain/mux%-%x+", err)
    local _, verbose, xst = sh(("%s -v -r exec -i %s t3 -- true"):format(sshlua, q(dinv)))
    assert.are.equal(0, xst, verbose)
    assert.matches("[hop 1 sclt3@10.231.3.13:22] ready", verbose, 1, true)
  end)

  it("refuses a socket another user owns, one open to others, and one in a directory others write", function()
    local _, err, status = mux("start", "--persist 60")
    assert.are.equal(0, status, err)
    local function run_t4()
      local o, e, st = sh(("%s -r exec -i %s -q t4 -- true"):format(sshlua, q(inv)))
      return o .. e, st
    end
    assert(os.execute("chmod 666 " .. q(sock)))
    local e1, s1 = run_t4()
    assert.are.equal(1, s1)
    assert.matches("ECONNECT: j2: connect: mux socket " .. sock .. " is open to other users (mode 666", e1, 1, true)
    assert(os.execute("chmod 600 " .. q(sock) .. " && chown nobody " .. q(sock)))
    local e2, s2 = run_t4()
    assert.are.equal(1, s2)
    assert.matches("is owned by uid %d+, not by you", e2)
    assert(os.execute("chown 0 " .. q(sock) .. " && chmod 777 " .. q(dir)))
    local e3, s3 = run_t4()
    assert.are.equal(1, s3)
    assert.matches("(the socket's directory) is writable by others", e3, 1, true)
    assert(os.execute("chmod 700 " .. q(dir)))
    local e4, s4 = run_t4()
    assert.are.equal(0, s4, e4)
  end)

  it("turns away a client of another user, even when the socket's mode would let it in", function()
    local _, err, status = mux("start", "--persist 60")
    assert.are.equal(0, status, err)
    assert(os.execute("chmod 711 " .. q(dir) .. " && chmod 666 " .. q(sock)))
    local py = ([[
import socket
s = socket.socket(socket.AF_UNIX)
s.connect(%q)
try:  # the mux closes at once: the write or the read may see it first
    s.sendall(bytes([5, 1, 0, 5, 1, 0, 3, 11]) + b"10.231.3.14" + bytes([0, 22]))
    data = s.recv(100)
except (BrokenPipeError, ConnectionResetError):
    data = b""
print(repr(data))
]]):format(sock)
    local out = H.sh("runuser -u nobody -- python3 -c " .. q(py) .. " 2>&1")
    assert.are.equal("b''", out:match("%S+"), out) -- closed: no SOCKS answer, no SSH banner
    assert(os.execute("chmod 600 " .. q(sock) .. " && chmod 700 " .. q(dir)))
    local log = H.readfile(sock .. ".log") or ""
    assert.matches("a connection from uid %d+ turned away", log)
  end)

  it("makes runs connect directly, said once, when the mux has died; start cleans up after it", function()
    local _, err, status = mux("start", "--persist 60")
    assert.are.equal(0, status, err)
    local pid = assert(H.readfile(sock .. ".pid")):match("%d+")
    assert(os.execute("kill -9 " .. pid))
    for _ = 1, 50 do
      if not H.readfile("/proc/" .. pid .. "/cmdline") then break end
      sshchain.sleep(0.1)
    end
    -- two chains in one process: both connect directly, and one line says why
    local script = H.tmpname() .. ".lua"
    finally(function() os.remove(script) end)
    H.writefile(script, ([[
      local sshchain = require "sshchain"
      local inv = assert(require("sshchain.inventory").load(%q))
      for _, host in ipairs { "t3", "t4" } do
        local s = assert(sshchain.connect(assert(inv:chain(host))))
        assert(s:exec("true").ok)
        s:close()
      end
      print("both")
    ]]):format(inv))
    local out, e, st = sh(sshlua .. " " .. q(script))
    assert.are.equal(0, st, e)
    assert.matches("both", out, 1, true)
    local lines = select(2, e:gsub("does not answer", ""))
    assert.are.equal(1, lines, e)
    assert.matches("the mux of j2 does not answer (no mux answers at " .. sock, e, 1, true)
    local sout = mux("status")
    assert.matches("not answering", sout, 1, true)
    local _, err2, status2 = mux("start", "--persist 60")
    assert.are.equal(0, status2, err2)
    local _, _, s3 = mux("status")
    assert.are.equal(0, s3)
  end)

  it("ends after --persist seconds without a client, and says why a start failed", function()
    local _, err, status = mux("start", "--persist 1")
    assert.are.equal(0, status, err)
    local st
    for _ = 1, 100 do
      local _, _, s = mux("status")
      st = s
      if st ~= 0 then break end
      sshchain.sleep(0.1)
    end
    assert.are.equal(1, st)
    assert.matches("ends: no client for 1 s", H.readfile(sock .. ".log") or "", 1, true)
    -- a jump host that cannot be reached: start fails with the reason
    local bad = H.tmpname() .. ".lua"
    finally(function() os.remove(bad) end)
    H.writefile(bad, ([[return { hosts = { dead = { host = %q, port = %d, user = "x", timeout = 1 } } }]]):format(
      H.lab.unreachable.host, H.lab.unreachable.port))
    local _, e2, s2 = sh(("%s -r mux start -i %s --control %s dead"):format(sshlua, q(bad), q(dir .. "/dead")))
    assert.are.equal(1, s2)
    assert.matches("did not start: mux: ", e2, 1, true)
  end)

  it("starts on first use with control_persist (from plain lua5.4 and from sshlua), and ends after it", function()
    local pinv = inventory(sock, "control_persist = 3")
    finally(function() os.remove(pinv) end)
    -- a Lua program in plain lua5.4 with its own specs finds none: it starts one in the
    -- background (its interpreter, with its module paths) and goes through it already
    local script = H.tmpname() .. ".lua"
    finally(function() os.remove(script) end)
    H.writefile(script, ([[
      local sshchain = require "sshchain"
      local lab = dofile(%q)
      local function spec(name, over)
        local s = { known_hosts = lab.known_hosts }
        for k, v in pairs(lab[name]) do s[k] = v end
        for k, v in pairs(over or {}) do s[k] = v end
        return s
      end
      local s = assert(sshchain.connect { spec("j1"), spec("j2", { control = %q, control_persist = 3 }), spec("t3") })
      print(s:label(), assert(s:exec("echo lua")).stdout)
      s:close()
    ]]):format(H.lab.dir .. "/lab.lua", sock))
    local lua = os.getenv("SSHCHAIN_RUNNER") or "lua5.4" -- sshlua under AddressSanitizer
    local lout, lerr, lst = sh(("LUA_PATH=%q LUA_CPATH=%q %s %s"):format(package.path, package.cpath, lua, q(script)))
    assert.are.equal(0, lst, lerr)
    assert.matches("^hop 1 sclt3@", lout)
    assert.matches("lua", lout, 1, true)
    assert.are.equal("600", H.sh("stat -c %a " .. q(sock)):match("%d+"))
    assert.is_nil(io.open(sock .. ".specs"), "the private copy of the hops is gone once read")
    local pid = assert(H.readfile(sock .. ".pid")):match("%d+")
    -- a recipe run goes through the same mux
    local out, verbose, st = sh(("%s -v -r exec -i %s t4 -- echo second"):format(sshlua, q(pinv)))
    assert.are.equal(0, st, verbose)
    assert.matches("second", out, 1, true)
    assert.matches("[hop 1 sclt4@10.231.3.14:22] ready", verbose, 1, true)
    assert.is_nil(verbose:find("sclj1@", 1, true), verbose)
    assert.are.equal(pid, H.readfile(sock .. ".pid"):match("%d+"), "the same mux")
    -- without a client for 3 s it ends, and the socket goes
    for _ = 1, 100 do
      if not H.readfile("/proc/" .. pid .. "/cmdline") then break end
      sshchain.sleep(0.1)
    end
    assert.is_nil(io.open(sock))
    assert.matches("ends: no client for 3 s", H.readfile(sock .. ".log") or "", 1, true)
    -- the next recipe run starts a new one
    local _, v2, s2 = sh(("%s -v -r exec -i %s t4 -- true"):format(sshlua, q(pinv)))
    assert.are.equal(0, s2, v2)
    assert.matches("[hop 1 sclt4@10.231.3.14:22] ready", v2, 1, true)
    assert.are_not.equal(pid, H.readfile(sock .. ".pid"):match("%d+"))
  end)

  it("is started and used as ssh's ControlMaster auto + ControlPersist in ssh_config say, on its own socket", function()
    local home = dir .. "/home" -- the default socket goes under $HOME/.ssh/sshchain
    assert(os.execute("mkdir -m 700 " .. q(home)))
    local cfg = dir .. "/config"
    H.writefile(cfg, ("Host j2\n  ControlMaster auto\n  ControlPath ~/.ssh/cm-%%r@%%h:%%p\n  ControlPersist 3\n"
      .. "Match all\nInclude %s\n"):format(H.lab.ssh_config))
    local run = ("HOME=%s %s -v -r exec -i %s t4 -- echo via"):format(q(home), sshlua, q(cfg))
    local out, verbose, st = sh(run)
    assert.are.equal(0, st, verbose)
    assert.matches("via", out, 1, true)
    assert.matches("ControlPath (sshchain's mux keeps its own socket", verbose, 1, true)
    local socks = H.sh("ls " .. q(home .. "/.ssh/sshchain"))
    local name = assert(socks:match("(mux%-%x+)%.pid"), socks)
    local pid = assert(H.readfile(home .. "/.ssh/sshchain/" .. name .. ".pid")):match("%d+")
    -- the next run goes through it: t4 is its first hop
    verbose, st = select(2, sh(run))
    assert.are.equal(0, st, verbose)
    assert.matches("[hop 1 sclt4@10.231.3.14:22] ready", verbose, 1, true)
    assert.is_nil(verbose:find("sclj1@", 1, true), verbose)
    assert.is_nil(io.open(home .. "/.ssh/cm-sclj2@10.231.2.2:2222"), "ControlPath's socket is not made")
    for _ = 1, 100 do
      if not H.readfile("/proc/" .. pid .. "/cmdline") then break end
      sshchain.sleep(0.1)
    end
    assert.is_nil(H.readfile("/proc/" .. pid .. "/cmdline"), "the mux ended after ControlPersist")
    -- ControlPersist is checked as ssh checks it
    H.writefile(cfg, "Host j2\n  ControlPersist often\nMatch all\nInclude " .. H.lab.ssh_config .. "\n")
    local _, e2, s2 = sh(run)
    assert.are_not.equal(0, s2)
    assert.matches("Bad ControlPersist argument", e2, 1, true)
  end)

  it("refuses a bad control_persist", function()
    local ok, err = pcall(sshchain.connect, { H.spec("j1"), H.spec("j2", { control = sock, control_persist = -1 }), H.spec("t4") })
    assert.is_false(ok)
    assert.matches("control_persist", err)
  end)
end)
