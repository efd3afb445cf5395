-- sshchain.sched: the task scheduler. Tasks are coroutines; a call that must wait yields inside a
-- task and turns the event loop outside one; either way every other task keeps running.
--
-- One rule keeps it simple: a task waits for one thing at a time (an op, a task, a condition, a
-- semaphore), so `waiting[op]` holds a single task and a wake-up is never lost or doubled. A
-- task woken for another reason than the one it waits for checks again and waits on (every wait
-- below loops on its condition).
local core = require "sshchain.core"
local errors = require "sshchain.errors"

local M = {}
local traceback = debug.traceback
local WAIT = {} -- what a task yields to the scheduler

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

--- Waits until op is done (or, with stream, has output to take).
function M.await(op, stream)
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
  M.await(core.sleep(sec))
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

local code_of = errors.code_of

--- Runs fn(item, i) for every item, at most opts.limit at once; results in item order:
--- {ok=true, value=v} or {ok=false, err=msg, code=CODE}.
function M.parallel(items, fn, opts)
  if type(items) ~= "table" then error("bad argument #1 to 'parallel' (table expected)", 2) end
  if type(fn) ~= "function" then error("bad argument #2 to 'parallel' (function expected)", 2) end
  local n = #items
  local limit = opts and opts.limit or math.max(n, 1)
  if type(limit) ~= "number" or limit < 1 then error("parallel: limit must be a positive number", 2) end
  local results, next_i = {}, 0
  local function worker()
    while next_i < n do
      next_i = next_i + 1
      local i = next_i
      local r = table.pack(xpcall(fn, task_error, items[i], i))
      if not r[1] then
        local e = r[2].err
        if errors.is_interrupted(e) then error(e, 0) end -- Ctrl-C ends the whole run
        results[i] = { ok = false, err = tostring(e), code = code_of(e), traceback = r[2].tb,
          stage = type(e) == "table" and e.stage or nil, hop = type(e) == "table" and e.hop or nil }
      elseif r[2] == nil and r[3] ~= nil then
        local info = type(r[5]) == "table" and r[5] or {}
        results[i] = { ok = false, err = tostring(r[3]), code = r[4] or code_of(r[3]),
          stage = info.stage, reason = info.reason, hop = info.hop }
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
-- Conditions and semaphores, for policies that make tasks wait for each other.

local Cond = {}
Cond.__index = Cond

function M.cond() return setmetatable({ waiters = {}, gen = 0 }, Cond) end

local function remove_waiter(list, task)
  for i = #list, 1, -1 do
    if list[i] == task then table.remove(list, i) return end
  end
end

--- Waits until the next signal, or until `timeout` seconds have passed (then returns false).
function Cond:wait(timeout)
  local task = current_task()
  local gen = self.gen
  local timer = timeout and core.sleep(math.max(timeout, 0))
  if task then
    self.waiters[#self.waiters + 1] = task
    if timer then waiting[timer] = task end
    coroutine.yield(WAIT)
    if timer then
      waiting[timer] = nil
      if not timer:done() then timer:cancel() end
    end
    if self.gen == gen then
      remove_waiter(self.waiters, task)
      return false
    end
    return true
  end
  repeat step(-1) until self.gen ~= gen or (timer and timer:done())
  if timer and not timer:done() then timer:cancel() end
  return self.gen ~= gen
end

--- Wakes every waiter.
function Cond:signal()
  self.gen = self.gen + 1
  for _, t in ipairs(self.waiters) do runnable[#runnable + 1] = t end
  self.waiters = {}
end

-- A counting semaphore that hands a released permit to the first waiter (one task woken per
-- release, in order: a thousand tasks waiting for handshake slots do not all wake up each time).
local Sem = {}
Sem.__index = Sem

function M.semaphore(n) return setmetatable({ n = n, queue = {}, gen = 0 }, Sem) end

function Sem:acquire()
  if self.n > 0 and #self.queue == 0 then
    self.n = self.n - 1
    return
  end
  local task = current_task()
  if task then
    local me = { task = task }
    self.queue[#self.queue + 1] = me
    repeat coroutine.yield(WAIT) until me.granted
    return
  end
  repeat step(-1) until self.n > 0 and #self.queue == 0
  self.n = self.n - 1
end

function Sem:release()
  local w = table.remove(self.queue, 1)
  if w then
    w.granted = true
    runnable[#runnable + 1] = w.task
  else
    self.n = self.n + 1
  end
end

function M.ntasks() return ntasks end
M.step = step
M.current_task = current_task

return M
