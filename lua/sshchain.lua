-- sshchain: SSH through chains and trees of jump hosts. The public API; the C primitives it
-- composes are in sshchain.core (sessions, ops, the event loop).
local core = require "sshchain.core"

local M = { _VERSION = "sshchain 0.1.0" }

local traceback = debug.traceback
local WAIT = {} -- what a task yields to the scheduler

---------------------------------------------------------------------------------------------------
-- Scheduler: tasks are coroutines. A call that must wait yields inside a task and turns the loop
-- outside one; either way every other task keeps running.

local tasks = {}     -- coroutine -> task
local ntasks = 0
local runnable = {}  -- tasks to resume, in order
local waiting = {}   -- op -> task waiting for it

local Task = {}
Task.__index = Task

-- A task that failed and was never waited for reports its error when it is collected.
function Task:__gc()
  if self.err ~= nil and not self.observed then
    io.stderr:write("sshchain: a task failed and nobody waited for it: ", tostring(self.traceback), "\n")
  end
end

local function task_error(e)
  return { err = e, tb = traceback(tostring(e), 2) }
end

-- r: what coroutine.resume returned: true, xpcall's status, then fn's results or {err=, tb=}
local function finish_task(task, r)
  tasks[task.co] = nil
  ntasks = ntasks - 1
  task.done = true
  if r[1] and r[2] then
    task.results = table.pack(table.unpack(r, 3, r.n))
  elseif r[1] then
    task.err, task.traceback = r[3].err, r[3].tb
  else
    task.err, task.traceback = r[2], traceback(task.co, tostring(r[2]))
  end
  for _, w in ipairs(task.waiters) do runnable[#runnable + 1] = w end
  task.waiters = {}
end

local function resume(task)
  if coroutine.status(task.co) ~= "suspended" then return end
  local r = table.pack(coroutine.resume(task.co))
  if coroutine.status(task.co) == "dead" then finish_task(task, r) end
end

local function run_runnable()
  while runnable[1] do
    local batch = runnable
    runnable = {}
    for _, t in ipairs(batch) do resume(t) end
  end
end

-- One turn: resume what can run, wait up to timeout_ms for events, resume what they woke.
local function step(timeout_ms)
  run_runnable()
  local ready = core.step(timeout_ms)
  for _, op in ipairs(ready) do
    local t = waiting[op]
    if t then
      waiting[op] = nil
      runnable[#runnable + 1] = t
    end
  end
  run_runnable()
end

local function current_task()
  return tasks[coroutine.running()]
end

-- Waits until op is done (or, with stream, has output to take).
local function await(op, stream)
  if op:ready(stream) then return end
  local task = current_task()
  if task then
    repeat
      waiting[op] = task
      coroutine.yield(WAIT)
    until op:ready(stream)
  else
    repeat step(-1) until op:ready(stream)
  end
end

--- Starts fn(...) as a task; returns the task (task:wait() gives fn's results).
function M.spawn(fn, ...)
  if type(fn) ~= "function" then error("bad argument #1 to 'spawn' (function expected)", 2) end
  local args = table.pack(...)
  local task = setmetatable({ waiters = {} }, Task)
  task.co = coroutine.create(function()
    return xpcall(fn, task_error, table.unpack(args, 1, args.n))
  end)
  tasks[task.co] = task
  ntasks = ntasks + 1
  runnable[#runnable + 1] = task
  return task
end

--- Waits for the task to end; returns its results, or raises its error.
function Task:wait()
  if not self.done then
    local me = current_task()
    if me == self then error("a task cannot wait for itself", 2) end
    if me then
      self.waiters[#self.waiters + 1] = me
      repeat coroutine.yield(WAIT) until self.done
    else
      repeat step(-1) until self.done
    end
  end
  self.observed = true
  if self.err ~= nil then error(self.err, 0) end
  return table.unpack(self.results, 1, self.results.n)
end

function Task:status() return self.done and (self.err ~= nil and "failed" or "done") or "running" end

--- Sleeps sec seconds (other tasks and forwards keep running).
function M.sleep(sec)
  if type(sec) ~= "number" then error("bad argument #1 to 'sleep' (number expected)", 2) end
  await(core.sleep(sec))
end

--- Drives tasks and forwarders: for `seconds` if given, else until every task has ended.
function M.run(seconds)
  local timer = seconds and core.sleep(seconds)
  repeat
    if timer then
      if timer:done() then break end
    elseif ntasks == 0 and not runnable[1] then
      break
    end
    step(-1)
  until false
end

local function code_of(msg)
  return type(msg) == "string" and msg:match("^(E%u+):") or "EERROR"
end

--- Runs fn(item, i) for every item, at most opts.limit at once; results in item order:
--- {ok=true, value=v} or {ok=false, err=msg, code=CODE}.
function M.parallel(items, fn, opts)
  if type(items) ~= "table" then error("bad argument #1 to 'parallel' (table expected)", 2) end
  if type(fn) ~= "function" then error("bad argument #2 to 'parallel' (function expected)", 2) end
  local n = #items
  local limit = opts and opts.limit or n
  if type(limit) ~= "number" or limit < 1 then error("parallel: limit must be a positive number", 2) end
  local results, next_i = {}, 0
  local function worker()
    while next_i < n do
      next_i = next_i + 1
      local i = next_i
      local r = table.pack(xpcall(fn, task_error, items[i], i))
      if not r[1] then
        local e = r[2].err
        results[i] = { ok = false, err = tostring(e), code = code_of(e), traceback = r[2].tb }
      elseif r[2] == nil and r[3] ~= nil then
        results[i] = { ok = false, err = tostring(r[3]), code = r[4] or code_of(r[3]) }
      else
        results[i] = { ok = true, value = r[2] }
      end
    end
  end
  local workers = {}
  for w = 1, math.min(limit, n) do workers[w] = M.spawn(worker) end
  for _, w in ipairs(workers) do w:wait() end
  return results
end

---------------------------------------------------------------------------------------------------
-- Host specs

local SPEC_KEYS = {
  host = "string", port = "number", user = "string", password = "string", identity = true,
  passphrase = "string", agent = "boolean", known_hosts = "string", host_key = "string",
  timeout = "number", keepalive = "number", name = "string",
}

local function home() return os.getenv("HOME") or "" end

local function expand(path)
  if path:sub(1, 2) == "~/" then return home() .. path:sub(2) end
  return path
end

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

--- Parses "user@host:port" (also "host", "host:port", "user@[v6addr]:port").
local function parse_target(str)
  local user, rest = str:match("^([^@]+)@(.+)$")
  rest = rest or str
  local host, port = rest:match("^%[(.+)%]:?(%d*)$")
  if not host then
    host, port = rest:match("^([^:]+):(%d+)$")
    host = host or rest
  end
  local spec = { host = host, user = user }
  if port and port ~= "" then spec.port = tonumber(port) end
  return spec
end
M.parse_target = parse_target

--- A full spec table from a string or table spec, with defaults filled in (misuse raises).
local function normalize_spec(spec, defaults, level)
  level = (level or 1) + 1
  if type(spec) == "string" then spec = parse_target(spec) end
  if type(spec) ~= "table" then error("host spec must be a table or a \"user@host:port\" string", level) end
  local s = {}
  for k, v in pairs(defaults or {}) do
    if SPEC_KEYS[k] then s[k] = v end
  end
  for k, v in pairs(spec) do
    local want = SPEC_KEYS[k]
    if not want then error("unknown host spec field '" .. tostring(k) .. "'", level) end
    if want ~= true and type(v) ~= want then
      error("host spec field '" .. k .. "' must be a " .. want .. " (got " .. type(v) .. ")", level)
    end
    s[k] = v
  end
  if type(s.host) ~= "string" or s.host == "" then error("host spec needs a host", level) end
  local ids = s.identity
  if type(ids) == "string" then ids = { ids } end
  if ids ~= nil and type(ids) ~= "table" then error("identity must be a path or a list of paths", level) end
  if ids then
    local list = {}
    for i, p in ipairs(ids) do list[i] = expand(p) end
    ids = list
  elseif not s.password then
    ids = {}
    for _, f in ipairs { "id_ed25519", "id_ecdsa", "id_rsa" } do
      local p = home() .. "/.ssh/" .. f
      if file_exists(p) then ids[#ids + 1] = p end
    end
  end
  s.identity = ids
  if s.known_hosts then s.known_hosts = expand(s.known_hosts) end
  return s
end
M.normalize_spec = normalize_spec

---------------------------------------------------------------------------------------------------
-- Sessions

local Session = {}
Session.__index = Session
M.Session = Session

local function check_session(self, method)
  if getmetatable(self) ~= Session then
    error("bad self to '" .. method .. "' (sshchain session expected)", 3)
  end
  return self._c
end

local function connect_one(spec, parent)
  local c, op = core.session_start(spec, parent and parent._c)
  await(op)
  local ok, msg, code = op:result()
  if not ok then
    c:close()
    return nil, msg, code
  end
  return setmetatable({ _c = c, spec = spec, parent = parent, host = spec.name or spec.host }, Session)
end

local function resolve_hops(hops, opts, level)
  if type(hops) == "table" and hops[1] == nil and next(hops) ~= nil then hops = { hops } end
  if type(hops) == "string" then
    if M.config and (opts.config or not hops:find("[@:]")) and M.config.resolve then
      local list, err = M.config.resolve(hops, opts)
      if not list then return nil, err end
      hops = list
    else
      hops = { hops }
    end
  end
  if type(hops) ~= "table" or hops[1] == nil then
    error("bad argument #1 to 'connect' (host spec, list of specs or ssh_config name expected)", level)
  end
  local list = {}
  for i, h in ipairs(hops) do list[i] = normalize_spec(h, opts, level) end
  return list
end

--- connect(hops [, opts]): a session to the last hop, reached through the others in order.
function M.connect(hops, opts)
  if opts ~= nil and type(opts) ~= "table" then error("bad argument #2 to 'connect' (table expected)", 2) end
  opts = opts or {}
  local list, err = resolve_hops(hops, opts, 3)
  if not list then return nil, "ECONNECT: " .. err, "ECONNECT" end
  local chain, parent = {}, nil
  for _, spec in ipairs(list) do
    local s, msg, code = connect_one(spec, parent)
    if not s then
      for i = #chain, 1, -1 do chain[i]:close() end
      return nil, msg, code
    end
    chain[#chain + 1] = s
    parent = s
  end
  local target = table.remove(chain)
  target._owned = chain
  return target
end

--- s:connect(spec): a child session reached through s (sharing s's connection).
function Session:connect(spec, opts)
  local c = check_session(self, "connect")
  if c:state() == "closed" then error("sshchain: session is closed", 2) end
  return connect_one(normalize_spec(spec, opts, 2), self)
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end
M.shell_quote = shell_quote

local function env_prefix(env)
  local names = {}
  for k in pairs(env) do
    if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then
      error("exec: env names must be identifiers (got " .. tostring(k) .. ")", 4)
    end
    names[#names + 1] = k
  end
  table.sort(names)
  local parts = {}
  for _, k in ipairs(names) do parts[#parts + 1] = k .. "=" .. shell_quote(tostring(env[k])) end
  return #parts > 0 and ("export " .. table.concat(parts, " ") .. "; ") or ""
end

local EXEC_OPTS = { stdin = "string", pty = "boolean", sudo_password = "string", timeout = "number",
  env = "table", on_stdout = "function", on_stderr = "function" }

--- s:exec(cmd [, opts]) -> {stdout, stderr, status, signal, ok} | nil, msg, CODE
function Session:exec(cmd, opts)
  local c = check_session(self, "exec")
  if type(cmd) ~= "string" then error("bad argument #1 to 'exec' (string expected)", 2) end
  opts = opts or {}
  for k, v in pairs(opts) do
    if not EXEC_OPTS[k] then error("exec: unknown option '" .. tostring(k) .. "'", 2) end
    if type(v) ~= EXEC_OPTS[k] then error("exec: option '" .. k .. "' must be a " .. EXEC_OPTS[k], 2) end
  end
  if opts.env then cmd = env_prefix(opts.env) .. cmd end
  local stream = opts.on_stdout or opts.on_stderr
  local op = c:exec_start(cmd, { stdin = opts.stdin, pty = opts.pty, sudo_password = opts.sudo_password,
    timeout = opts.timeout, stream = stream and true or false })
  if not stream then
    await(op)
    return op:result()
  end
  local kept = { {}, {} }
  local function deliver(o, e)
    if #o > 0 then
      if opts.on_stdout then opts.on_stdout(o) else kept[1][#kept[1] + 1] = o end
    end
    if #e > 0 then
      if opts.on_stderr then opts.on_stderr(e) else kept[2][#kept[2] + 1] = e end
    end
  end
  repeat
    await(op, true)
    deliver(op:take())
  until op:done()
  deliver(op:take())
  local r, msg, code = op:result()
  if not r then return nil, msg, code end
  r.stdout, r.stderr = table.concat(kept[1]), table.concat(kept[2])
  return r
end

--- s:close(): closes s, its children first, and the jump hosts it owns; safe to call twice.
function Session:close()
  local c = check_session(self, "close")
  c:close()
  local owned = self._owned
  if owned then
    self._owned = nil
    for i = #owned, 1, -1 do owned[i]:close() end
  end
end

function Session:state() return check_session(self, "state"):state() end
function Session:label() return check_session(self, "label"):label() end
function Session:__tostring() return tostring(self._c) end
Session.__close = Session.close

---------------------------------------------------------------------------------------------------

--- Live core objects (sessions, channels, ops) and tasks: for leak checks.
function M.stats()
  local s = core.stats()
  s.tasks = ntasks
  return s
end

M.core = core
M._await = await
M._step = step
return M
