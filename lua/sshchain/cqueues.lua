-- sshchain.cqueues: sshchain inside a cqueues application. attach(cq) runs a driver coroutine on
-- the controller that polls sshchain's pollable fd (and its next timer) and does the ready work;
-- calls made in cq:wrap coroutines wait on cqueues conditions, so every other coroutine of the
-- controller runs meanwhile. Calls made outside the controller still run sshchain's loop until
-- they complete.
--
--   local cqueues = require "cqueues"
--   local cq = cqueues.new()
--   local host = require("sshchain.cqueues").attach(cq)
--   cq:wrap(function() print(assert(s:exec("uptime")).stdout) end)
--   assert(cq:loop())   -- ... host:detach() when done
local core = require "sshchain.core"
local sched = require "sshchain.sched"

local M = {}

function M.attach(cq)
  if sched.host() then error("sshchain: a host loop is attached already", 2) end
  local cqueues = require "cqueues"
  local condition = require "cqueues.condition"
  local kick = condition.new()
  local running = true
  -- what cqueues polls: sshchain's backend fd, readable when it has work, and its next timer
  local pollable = {
    pollfd = function() return core.pollfd() end,
    events = function() return "r" end,
    timeout = function()
      local t = core.timeout()
      return t and t / 1000 or nil
    end,
  }
  cq:wrap(function()
    while running do
      cqueues.poll(pollable, kick)
      sched.step(0)
    end
  end)
  sched.set_host {
    adopt = function() return cqueues.running() ~= nil end,
    wait = function(task)
      task.cond = task.cond or condition.new()
      while not task.awake do task.cond:wait() end
    end,
    wake = function(task)
      if task.cond then task.cond:signal() end
    end,
    kick = function() kick:signal() end,
  }
  local h = {}
  --- Stops the driver; sshchain's waits block again.
  function h.detach()
    if not running then return end
    sched.unset_host(2)
    running = false
    kick:signal()
  end
  return h
end

return M
