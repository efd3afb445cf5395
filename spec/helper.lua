-- helper.lua: what the specs share: the lab's description (written by scripts/lab.sh, read the
-- first time a spec uses H.lab: the unit tier never does), host specs for its hosts, a leak
-- check, and an assertion on failures as data.
local assert = require "luassert"

local labdir = os.getenv("SSHCHAIN_LAB_DIR") or "/tmp/sshchain-lab"
local H = setmetatable({}, { __index = function(t, k)
  if k ~= "lab" then return nil end
  local f = io.open(labdir .. "/lab.lua")
  if not f then error("the lab is not up: run scripts/lab.sh up (or make test)", 2) end
  f:close()
  local lab = dofile(labdir .. "/lab.lua")
  rawset(t, "lab", lab)
  return lab
end })
H.build = os.getenv("SSHCHAIN_BUILD") or "build"
H.root = os.getenv("PWD")

--- A copy of the lab host spec `name` (with the lab's known_hosts), with overrides applied.
function H.spec(name, over)
  local base = assert(H.lab[name], "no lab host " .. name)
  local s = { known_hosts = H.lab.known_hosts, timeout = 10 }
  for k, v in pairs(base) do s[k] = v end
  for k, v in pairs(over or {}) do s[k] = v end
  return s
end

--- The chain j1 -> j2 -> name.
function H.chain(name, over)
  return { H.spec("j1"), H.spec("j2"), H.spec(name, over) }
end

--- Asserts that a call failed as `expect` says: {code=, stage=, reason=, hop=} compared with the
--- error table (the 4th result); the message must start with "CODE: " and, when a hop is
--- expected, name it ("hop N "). Returns msg, err.
function H.failed(expect, r, msg, code, err)
  assert.is_nil(r, "expected a failure, got " .. tostring(r))
  assert.are.equal(expect.code, code, msg)
  assert.is_table(err, "no error table with " .. tostring(msg))
  for k, v in pairs(expect) do
    assert.are.equal(v, err[k], ("err.%s of %s"):format(k, tostring(msg)))
  end
  assert.are.equal(code .. ": ", msg:sub(1, #code + 2))
  if expect.hop then assert.is_truthy(msg:find("hop " .. expect.hop .. " ", 1, true), msg) end
  return msg, err
end

--- Asserts that no session, channel or op of the core is still alive, beyond what an earlier
--- check already reported: one test that leaks fails once, not every test after it too (the
--- objects it left stay alive in the spec process).
local reported = { sessions = 0, channels = 0, ops = 0, tasks = 0 }
function H.assert_no_leaks(sshchain)
  sshchain.run(0) -- lets closed handles finish closing
  collectgarbage()
  collectgarbage()
  sshchain.core.step(0)
  local st = sshchain.stats()
  local now, new, any = {}, {}, false
  for k, before in pairs(reported) do
    now[k] = st[k]
    new[k] = math.max(st[k] - before, 0)
    any = any or new[k] > 0
  end
  reported = now -- what is left now is told once, by this check
  if any then
    assert.are.same({ sessions = 0, channels = 0, ops = 0, tasks = 0 }, new, "left alive by this test")
  end
end

function H.tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p
end

function H.readfile(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local d = f:read("a")
  f:close()
  return d
end

function H.writefile(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

--- Runs a shell command locally; returns its stdout and exit code.
function H.sh(cmd)
  local p = io.popen(cmd, "r")
  local out = p:read("a")
  local _, _, code = p:close()
  return out, code
end

--- Runs a shell command in the background and waits for it while serving the event loop (so
--- local clients of forwards get answers); returns its output (stdout and stderr) and exit code.
function H.bg(sshchain, cmd, max_seconds)
  local out = H.tmpname()
  os.execute("( (" .. cmd .. ") > " .. out .. " 2>&1; echo $? > " .. out .. ".rc ) &")
  local deadline = sshchain.core.now() + (max_seconds or 30)
  while sshchain.core.now() < deadline do
    local f = io.open(out .. ".rc")
    if f then
      local rc = f:read("n")
      f:close()
      if rc then
        local data = H.readfile(out)
        os.remove(out)
        os.remove(out .. ".rc")
        return data, rc
      end
    end
    sshchain.sleep(0.02)
  end
  error("background command did not finish in time: " .. cmd)
end

return H
