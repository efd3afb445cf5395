-- unit: the scheduler (sshchain.sched) on the event loop alone: tasks, parallel in order with a
-- limit, conditions with a timeout, semaphores that hand a permit to one waiter at a time.
local sshchain = require "sshchain"
local sched = sshchain.sched

describe("scheduler", function()
  after_each(function()
    sshchain.run(0)
    assert.are.equal(0, sshchain.stats().tasks)
  end)

  it("runs tasks concurrently and gives their results or errors", function()
    local t0 = sshchain.core.now()
    local a = sched.spawn(function(x) sched.sleep(0.2) return x * 2 end, 21)
    local b = sched.spawn(function() sched.sleep(0.2) error("boom", 0) end)
    assert.are.equal(42, a:wait())
    assert.has_error(function() b:wait() end, "boom")
    assert.is_true(sshchain.core.now() - t0 < 0.35)
  end)

  it("parallel keeps item order, honours the limit, and reports failures with their CODE", function()
    local running, peak = 0, 0
    local res = sched.parallel({ 1, 2, 3, 4, 5, 6 }, function(i)
      running = running + 1
      peak = math.max(peak, running)
      sched.sleep(0.05 * (7 - i))
      running = running - 1
      if i == 3 then return nil, "EIO: three", "EIO", { stage = "exec" } end
      if i == 4 then assert(false, "ECLOSED: four") end
      return i * 10
    end, { limit = 2 })
    assert.are.equal(2, peak)
    assert.are.same({ ok = true, value = 10 }, res[1])
    assert.are.same({ false, "EIO", "exec" }, { res[3].ok, res[3].code, res[3].stage })
    assert.are.equal("ECLOSED", res[4].code)
    assert.are.same({}, sched.parallel({}, function() end))
  end)

  it("a condition wakes its waiters, or lets them go after a timeout", function()
    local c = sched.cond()
    local woke
    local t = sched.spawn(function() woke = c:wait(5) end)
    sched.spawn(function() sched.sleep(0.05) c:signal() end)
    t:wait()
    assert.is_true(woke)
    local t0 = sshchain.core.now()
    assert.is_false(sched.spawn(function() return c:wait(0.1) end):wait())
    assert.is_true(sshchain.core.now() - t0 < 1)
  end)

  it("a semaphore wakes one waiter per release, in order", function()
    local sem = sched.semaphore(1)
    local order = {}
    local tasks = {}
    for i = 1, 4 do
      tasks[i] = sched.spawn(function()
        sem:acquire()
        order[#order + 1] = i
        sched.sleep(0.01)
        sem:release()
      end)
    end
    for _, t in ipairs(tasks) do t:wait() end
    assert.are.same({ 1, 2, 3, 4 }, order)
    assert.are.equal(1, sem.n)
  end)
end)
