-- demo.lua: the main job on the built-in lab: one connection to the first jump host carries a
-- tree of sessions to every target behind the second; commands run on all of them at once.
local sshchain = require "sshchain"
local lab = dofile((os.getenv("SSHCHAIN_LAB_DIR") or "/tmp/sshchain-lab") .. "/lab.lua")

local function spec(name)
  local s = { known_hosts = lab.known_hosts }
  for k, v in pairs(lab[name]) do s[k] = v end
  return s
end

local function say(fmt, ...) io.write(string.format(fmt, ...), "\n") io.flush() end

say("== 1. Batch commands through two jump hosts")
say("   client -> j1 %s:%d (password) -> j2 %s:%d (key) -> t1..t4 (key+passphrase, kbd-interactive, ...)",
  lab.j1.host, lab.j1.port, lab.j2.host, lab.j2.port)
local t0 = sshchain.core.now()
local j2 = assert(sshchain.connect({ spec("j1"), spec("j2") }))
local names = { "t1", "t2", "t3", "t4" }
local results = sshchain.parallel(names, function(name)
  local s = assert(j2:connect(spec(name)))
  local r = assert(s:exec("echo \"$(hostname -I | awk '{print $1}') $(whoami) $(cut -d' ' -f1 /proc/loadavg)\""))
  s:close()
  return r.stdout
end)
say("   %-6s %-14s %-8s %s", "host", "address", "user", "load")
for i, r in ipairs(results) do
  if r.ok then
    local addr, user, load = r.value:match("(%S+) (%S+) (%S+)")
    say("   %-6s %-14s %-8s %s", names[i], addr, user, load)
  else
    say("   %-6s FAILED: %s", names[i], r.err)
  end
end
say("   %d hosts in %.2f s, over one TCP connection to j1", #names, sshchain.core.now() - t0)

say("\n== 2. Concurrent commands on one target session")
local t = assert(j2:connect(spec("t1")))
t0 = sshchain.core.now()
local items = {}
for i = 1, 8 do items[i] = i end
local res = sshchain.parallel(items, function(i) return assert(t:exec("sleep 0.5; echo " .. i)).stdout end)
local okn = 0
for _, r in ipairs(res) do if r.ok then okn = okn + 1 end end
say("   %d/%d commands of 0.5 s each finished in %.2f s (sshd's MaxSessions is 10)", okn, #items,
  sshchain.core.now() - t0)

say("\n== 3. Errors name the hop and the stage")
local bad = spec("t4")
bad.password, bad.identity = "wrong", {}
local _, msg = j2:connect(bad)
say("   %s", msg)
local _, msg2 = sshchain.connect({ spec("j1"), spec("j2nofwd"), spec("t1") })
say("   %s", msg2)

j2:close()
local st = sshchain.stats()
say("\nleft alive: %d sessions, %d channels", st.sessions, st.channels)
