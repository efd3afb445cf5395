-- sshchain.sched: the task scheduler. Tasks are coroutines; a call that must wait yields inside a
-- task and turns the event loop outside one; either way every other task keeps running.
--
-- The rules that keep it simple: a task waits for one thing at a time (an op, a task, a
-- condition, a semaphore; an op with a timer at most); several tasks may wait for the same op
-- (a process read by one task and written by another), and all of them are woken when it has
-- news. A task woken for another reason than the one it waits for checks again and waits on
-- (every wait below loops on its condition), so a wake-up is never lost.
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

---------------------------------------------------------------------------------------------------
-- A host event loop (sshchain.luv, sshchain.cqueues attach one): its coroutines are adopted as
-- foreign tasks, whose waits go through the host's own way of suspending a coroutine.
--   host.adopt(co) -> whether a wait in co may suspend it (a coroutine the host runs)
--   host.wait(task) suspends the running foreign coroutine until host.wake(task)
--   host.wake(task) makes it run again; host.kick() asks the host for a step soon

local host
local foreign = setmetatable({}, { __mode = "k" }) -- coroutine -> its foreign task

function M.set_host(h)
  host = h
  core.set_hosted(h ~= nil) -- work queued outside a step then makes core.pollfd() readable
end

--- Detaches the host loop; raises while host coroutines wait on sshchain (nothing could wake
--- them then). level: where the error points, as error's.
function M.unset_host(level)
  local n = 0
  for co, t in pairs(foreign) do if not t.awake and coroutine.status(co) ~= "dead" then n = n + 1 end end
  if n > 0 then error(("sshchain: cannot detach while %d coroutine(s) wait on sshchain"):format(n), level + 1) end
  M.set_host(nil)
end

--- A task became runnable: outside a step, a host loop must be asked for one.
local stepping = false
local function queue(task)
  runnable[#runnable + 1] = task
  if host and not stepping then host.kick() end
end
function M.host() return host end

local function resume(task)
  if task.foreign then
    if not host then return end -- detached under it: unset_host refuses that
    if coroutine.status(task.co) == "dead" then -- closed by the host while it waited: gone
      foreign[task.co] = nil
      return
    end
    if not task.awake then
      task.awake = true
      host.wake(task)
    end
    return
  end
  if coroutine.status(task.co) ~= "suspended" then return end
  local r = table.pack(coroutine.resume(task.co))
  if coroutine.status(task.co) == "dead" then finish_task(task, r) end
end

--- Suspends the running task until something puts it on the runnable list.
local function suspend(task)
  if task.foreign then
    task.awake = false
    host.kick()
    host.wait(task)
    task.awake = true
  else
    coroutine.yield(WAIT)
  end
end

local function run_runnable()
  while runnable[1] do
    local batch = runnable
    runnable = {}
    for _, t in ipairs(batch) do resume(t) end
  end
end

-- One turn: resume what can run, wait up to timeout_ms for events, resume what they woke.
local function step_body(timeout_ms)
  run_runnable()
  local ready = core.step(timeout_ms)
  for _, op in ipairs(ready) do
    local list = waiting[op]
    if list then
      waiting[op] = nil
      for _, t in ipairs(list) do runnable[#runnable + 1] = t end
    end
  end
  run_runnable()
end

local function step(timeout_ms)
  local was = stepping
  stepping = true
  local ok, err = pcall(step_body, timeout_ms)
  stepping = was
  if not ok then error(err, 0) end
end

--- task waits for op (once in its list).
local function wait_on(op, task)
  local list = waiting[op]
  if not list then
    waiting[op] = { task }
    return
  end
  for _, t in ipairs(list) do if t == task then return end end
  list[#list + 1] = task
end

local function unwait(op, task)
  local list = waiting[op]
  if not list then return end
  for i = #list, 1, -1 do if list[i] == task then table.remove(list, i) end end
  if not list[1] then waiting[op] = nil end
end

local function current_task()
  local co, main = coroutine.running()
  local t = tasks[co]
  if t or main or not host or not host.adopt(co) then return t end
  t = foreign[co]
  if not t then
    t = { co = co, foreign = true, awake = true, waiters = {} }
    foreign[co] = t
  end
  return t
end

-- What a wait holds, given up however the wait ends: a return, a raise, or a host closing the
-- coroutine while it waits (then nothing after the wait runs). A to-be-closed value.
local Hold = { __close = function(h)
  if h.task then
    unwait(h.op, h.task)
    if h.timer then unwait(h.timer, h.task) end
  end
  if h.timer and not h.timer:done() then h.timer:cancel() end
end }

--- Waits until op is done (or, with stream, has output to take).
function M.await(op, stream)
  if op:ready(stream) then return end
  local task = current_task()
  if task then
    local _ <close> = setmetatable({ task = task, op = op }, Hold)
    repeat
      wait_on(op, task)
      suspend(task)
    until op:ready(stream)
  else
    repeat step(-1) until op:ready(stream)
  end
end

--- Waits until pred() is true, checking it whenever op has news or is done, or until `timeout`
--- seconds have passed (nil: no limit). Returns whether pred() held.
function M.await_until(op, pred, timeout)
  if pred() then return true end
  local timer = timeout and core.sleep(math.max(timeout, 0))
  local task = current_task()
  local _ <close> = timer and setmetatable({ task = task, op = op, timer = timer }, Hold) or nil
  while not pred() do
    if op:done() then break end -- no news will come any more
    if timer and timer:done() then break end
    if task then
      wait_on(op, task)
      if timer then wait_on(timer, task) end
      suspend(task)
      unwait(op, task)
      if timer then unwait(timer, task) end
    else
      step(-1)
    end
  end
  return pred()
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
  queue(task)
  return task
end

--- Waits for the task to end; returns its results, or raises its error.
function Task:wait()
  if not self.done then
    local me = current_task()
    if me == self then error("a task cannot wait for itself", 2) end
    if me then
      self.waiters[#self.waiters + 1] = me
      repeat suspend(me) until self.done
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
  local timer = core.sleep(sec)
  local _ <close> = setmetatable({ timer = timer }, Hold)
  M.await(timer)
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

--- The result of one call of fn: r is what xpcall returned (packed).
local function outcome(r)
  if not r[1] then
    local e = r[2].err
    if errors.is_interrupted(e) then error(e, 0) end -- Ctrl-C ends the whole run
    return { ok = false, err = tostring(e), code = code_of(e), traceback = r[2].tb,
      stage = type(e) == "table" and e.stage or nil, reason = type(e) == "table" and e.reason or nil,
      hop = type(e) == "table" and e.hop or nil }
  elseif r[2] == nil and r[3] ~= nil then
    local info = type(r[5]) == "table" and r[5] or {}
    return { ok = false, err = tostring(r[3]), code = r[4] or code_of(r[3]),
      stage = info.stage, reason = info.reason, hop = info.hop }
  end
  return { ok = true, value = r[2] }
end

local PARALLEL_OPTS = { limit = { type = "number", min = 1 }, retries = "any", on_retry = "function" }

--- Runs fn(item, i, attempt) for every item, at most opts.limit at once; results in item order:
--- {ok=true, value=v} or {ok=false, err=msg, code=CODE, stage=, reason=, hop=} (with retries,
--- also attempts=N). opts.retries (sshchain.retry's policy: N or {count=, backoff=, max_backoff=})
--- calls fn again, after a backoff, when it failed in a way of the network (ECONNECT,
--- ETIMEDOUT, ECLOSED, ECHANNEL on open), never for EAUTH, EHOSTKEY or a value it returned;
--- opts.on_retry(item, i, attempt, result, wait) hears each retry.
function M.parallel(items, fn, opts)
  if type(items) ~= "table" then error("bad argument #1 to 'parallel' (table expected)", 2) end
  if type(fn) ~= "function" then error("bad argument #2 to 'parallel' (function expected)", 2) end
  if opts ~= nil and type(opts) ~= "table" then error("bad argument #3 to 'parallel' (table expected)", 2) end
  opts = errors.check_options(opts, PARALLEL_OPTS, "parallel", 2)
  local retry = require "sshchain.retry"
  local policy = retry.policy(opts.retries, "parallel", 2)
  local n = #items
  local limit = opts.limit or math.max(n, 1)
  local results, next_i = {}, 0
  local function worker()
    while next_i < n do
      next_i = next_i + 1
      local i = next_i
      local attempt = 1
      while true do
        local res = outcome(table.pack(xpcall(fn, task_error, items[i], i, attempt)))
        if policy then res.attempts = attempt end
        results[i] = res
        if res.ok or not policy or attempt > policy.count or not retry.retryable(res.code, res) then break end
        local wait = retry.delay(policy, attempt)
        if opts.on_retry then opts.on_retry(items[i], i, attempt, res, wait) end
        M.sleep(wait)
        attempt = attempt + 1
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
    if timer then wait_on(timer, task) end
    suspend(task)
    if timer then
      unwait(timer, task)
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
  for _, t in ipairs(self.waiters) do queue(t) end
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
    repeat suspend(task) until me.granted
    return
  end
  repeat step(-1) until self.n > 0 and #self.queue == 0
  self.n = self.n - 1
end

function Sem:release()
  local w = table.remove(self.queue, 1)
  while w and coroutine.status(w.task.co) == "dead" do -- closed while it waited: not its turn
    w = table.remove(self.queue, 1)
  end
  if w then
    w.granted = true
    queue(w.task)
  else
    self.n = self.n + 1
  end
end

function M.ntasks() return ntasks end
M.step = step
M.current_task = current_task

return M
