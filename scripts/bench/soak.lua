-- bench/soak.lua PHASE ARGS... [PHASE ARGS...]: long runs in one process, one phase after the
-- other, sampling its RSS (KiB) and open file descriptors as they go; prints one line per
-- sample, "PHASE DONE RSS_KIB FDS SECONDS":
--   seq N        N connect + `exec true` + close of t4 through j1 -> j2, one after the other
--                (the jump sessions are held by another session, as a long-lived tool holds them)
--   rounds R C   R rounds of C concurrent sessions to t4 (connect, exec, close) through j1 -> j2
--   flaps N      a reconnecting forward through j1 -> j2 to t1's web server; j2's sshd of the
--                chain is killed N times, each time waited for until it serves again
--   forward N    the same forward serving N short HTTP connections (8 clients at once, from
--                python3 scripts/bench/tcpclient.py), in thousands
-- A sample is taken every `every` units (1000 sessions, 10 flaps, 1000 connections).
local sshchain = require "sshchain"
local common = dofile(arg[0]:gsub("[^/]*$", "") .. "common.lua")
local lab = common.lab

local function spec(name) -- j1 and t4 by key, j2 by password (as bench/connect.lua's chains)
  local s = { known_hosts = lab.known_hosts, timeout = 30 }
  for k, v in pairs(lab[name]) do s[k] = v end
  if name ~= "j2" then s.password, s.identity = nil, lab.keys[name] end
  return s
end

local PID = io.open("/proc/self/stat"):read("a"):match("^(%d+)")

local rss = common.rss_kib

local function nfds()
  local p = io.popen("ls /proc/" .. PID .. "/fd | wc -l")
  local n = tonumber(p:read("a"))
  p:close()
  return n - 1 -- the pipe to ls
end

local t0 = sshchain.core.now()
local mode
local function sample(done)
  collectgarbage()
  collectgarbage()
  print(mode, done, rss(), nfds(), ("%.1f"):format(sshchain.core.now() - t0))
  io.stdout:flush()
end

--- Runs cmd in the background while the loop turns; its exit status.
local function bg(cmd, max_seconds)
  local rcfile = os.tmpname()
  os.execute("( " .. cmd .. " >/dev/null 2>&1; echo $? > " .. rcfile .. ".rc ) &")
  local deadline = sshchain.core.now() + (max_seconds or 60)
  while sshchain.core.now() < deadline do
    local f = io.open(rcfile .. ".rc")
    local rc = f and f:read("n")
    if f then f:close() end
    if rc then
      os.remove(rcfile .. ".rc")
      os.remove(rcfile)
      return rc
    end
    sshchain.sleep(0.01)
  end
  error("soak: timed out: " .. cmd)
end

local jumps = assert(sshchain.connect { spec("j1"), spec("j2") })
local function session()
  local s = assert(sshchain.connect { spec("j1"), spec("j2"), spec("t4") })
  assert(assert(s:exec("true")).ok)
  s:close()
end

local phases = {}

function phases.seq(n)
  session()
  sample(0)
  for i = 1, n do
    session()
    if i % 1000 == 0 then sample(i) end
  end
end

function phases.rounds(rounds, c)
  local items = {}
  for i = 1, c do items[i] = i end
  local function round()
    for _, r in ipairs(sshchain.parallel(items, session)) do assert(r.ok, r.err) end
  end
  round()
  sample(0)
  for i = 1, rounds do
    round()
    if (i * c) % 1000 == 0 then sample(i * c) end
  end
end

--- A reconnecting forward to t1's web server, and the curl command that asks it for a page.
local function web_forward()
  local host, port = lab.http.t1:match("^(.-):(%d+)$")
  local f = assert(jumps:forward { to_host = host, to_port = tonumber(port),
    reconnect = { backoff = 0.05, max_backoff = 0.5 } })
  local url = ("curl -sS -m 5 -o /dev/null http://127.0.0.1:%d/"):format(f.port)
  assert(bg(url) == 0, "the forward does not serve")
  return f, url
end

function phases.flaps(n)
  local f, url = web_forward()
  local worst, sum = 0, 0
  sample(0)
  for i = 1, n do
    os.execute("ip netns exec scl-j2 pkill -KILL -f '^sshd: sclj2'")
    local deadline = sshchain.core.now() + 30
    while f.restores < i do
      assert(sshchain.core.now() < deadline, "not restored after flap " .. i)
      sshchain.sleep(0.01)
    end
    assert(bg(url) == 0, "not served after flap " .. i)
    worst, sum = math.max(worst, f.restored_in), sum + f.restored_in
    if i % 10 == 0 then sample(i) end
  end
  io.stderr:write(("flaps: restored in %.2f s on average, %.2f s at worst\n"):format(sum / n, worst))
  f:close()
end

function phases.forward(n)
  local f = web_forward()
  local client = "python3 scripts/bench/tcpclient.py rate 127.0.0.1 " .. f.port .. " 1000 8"
  assert(bg(client) == 0)
  sample(0)
  for i = 1, n // 1000 do
    assert(bg(client) == 0)
    sample(i * 1000)
  end
  local st = f:stats()
  io.stderr:write(("forward: accepted %d, errors %d\n"):format(st.accepted, st.errors))
  f:close()
end

local i = 1
while arg[i] do
  mode = arg[i]
  local fn = assert(phases[mode], "soak: no phase " .. mode)
  local n = fn == phases.rounds and 2 or 1
  local a, b = tonumber(arg[i + 1]), tonumber(arg[i + 2])
  fn(a, n == 2 and b or nil)
  i = i + n + 1
end
jumps:close()
