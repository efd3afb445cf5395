-- sshchain.luv: sshchain inside a luv application. attach(uv) watches sshchain's pollable fd with
-- a luv poll handle and its next timer with a luv timer, and does sshchain's ready work from
-- them; calls made in a coroutine that luv callbacks run (coroutine.wrap, coroutine.resume) yield
-- to luv while they wait, and resume when their work is done. Calls made outside any coroutine
-- still run sshchain's loop until they complete, as without a host loop.
--
--   local uv = require "luv"
--   local host = require("sshchain.luv").attach(uv)
--   coroutine.wrap(function() print(assert(s:exec("uptime")).stdout) end)()
--   uv.run()            -- ... host:detach() when done
local core = require "sshchain.core"
local sched = require "sshchain.sched"

local M = {}

function M.attach(uv)
  if sched.host() then error("sshchain: a host loop is attached already", 2) end
  local poll = uv.new_poll(core.pollfd())
  local timer = uv.new_timer()
  local h = {}
  local pending = false
  local function pump()
    pending = false
    sched.step(0)
    timer:stop()
    if pending then -- a kick during the step: another step at once
      timer:start(0, 0, pump)
      return
    end
    local t = core.timeout()
    if t then timer:start(t, 0, pump) end
  end
  poll:start("r", pump)
  sched.set_host {
    adopt = function() return true end, -- any coroutine but the main one: luv has no others
    wait = function() coroutine.yield() end,
    wake = function(task)
      local ok, err = coroutine.resume(task.co)
      if not ok then io.stderr:write("sshchain: a luv coroutine failed: ", tostring(err), "\n") end
    end,
    kick = function()
      if not pending then
        pending = true
        timer:stop()
        timer:start(0, 0, pump)
      end
    end,
  }
  pump()
  --- Stops watching; sshchain's waits block again. luv finishes closing the two handles in its
  --- next run, as with any handle closed outside uv.run.
  function h.detach()
    if poll:is_closing() then return end
    sched.unset_host(2)
    poll:stop()
    poll:close()
    timer:stop()
    timer:close()
  end
  return h
end

return M
