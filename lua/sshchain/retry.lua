-- sshchain.retry: what may be tried again, and when. Failures of the network (a hop that did not
-- answer, a connection lost, a channel the server would not open) are retried with exponential
-- backoff and jitter; what the servers decided (EAUTH, EHOSTKEY), what the files say, and a
-- command that ran and failed (or ran past its own timeout) never are.
--
-- A policy is made from what users write:
--   retries = N                 N more attempts, backoff 0.5 s doubling up to 10 s
--   retries = { count = N, backoff = S, max_backoff = S }
--   reconnect = true | { max_wait = S, backoff = S, max_backoff = S, attempts = N }
-- and misuse (a negative count, an unknown key) raises naming the option.
local errors = require "sshchain.errors"

local M = {}

--- The failure codes of the network.
M.NETWORK = { ECONNECT = true, ETIMEDOUT = true, ECLOSED = true, ECHANNEL = true }

--- Whether a failure (CODE and its error table) is one of the network's, worth another attempt.
function M.retryable(code, info)
  if not M.NETWORK[code] then return false end
  local stage, reason = info and info.stage, info and info.reason
  if code == "ETIMEDOUT" and stage == "exec" and reason == "timeout" then return false end -- the command's own
  if code == "ECHANNEL" then return reason == "channel refused" or stage == "hop channel" end -- on open only
  return true
end

local RETRY_KEYS = {
  count = { type = "number", integer = true, min = 0, max = 1000 },
  backoff = { type = "number", min = 0, max = 3600 },
  max_backoff = { type = "number", min = 0, max = 3600 },
}

local RECONNECT_KEYS = {
  max_wait = { type = "number", min = 0, max = 1e9 },
  backoff = RETRY_KEYS.backoff,
  max_backoff = RETRY_KEYS.max_backoff,
  attempts = { type = "number", integer = true, min = 1, max = 1e9 },
  hold = { type = "number", min = 0, max = 1e6 },
}

local function copy(t)
  local o = {}
  for k, v in pairs(t) do o[k] = v end
  return o
end

--- A retries policy {count=, backoff=, max_backoff=} from an option value (nil: none); raises
--- (at level) on a bad one. what names the call.
function M.policy(v, what, level)
  level = (level or 1) + 1
  if v == nil or v == 0 or v == false then return nil end
  if type(v) == "number" then v = { count = v } end
  if type(v) ~= "table" then
    error(("%s: option 'retries' must be a count or a table {count=, backoff=, max_backoff=} (got %s)"):format(
      what, tostring(v)), level)
  end
  local p = copy(errors.check_options(v, RETRY_KEYS, what .. ": retries", level))
  p.count = math.tointeger(p.count or 3)
  p.backoff = p.backoff or 0.5
  p.max_backoff = p.max_backoff or math.max(10, p.backoff)
  if p.count == 0 then return nil end
  return p
end

--- A reconnect policy from an option value: true, or a table (see the top); nil for nil/false.
--- defaults: the caller's {max_wait=, hold=} (a forward waits for ever, a session a minute).
function M.reconnect_policy(v, what, defaults, level)
  level = (level or 1) + 1
  if v == nil or v == false then return nil end
  if v == true then v = {} end
  if type(v) ~= "table" then
    error(("%s: option 'reconnect' must be true or a table {max_wait=, backoff=, max_backoff=, attempts=, hold=} (got %s)")
      :format(what, tostring(v)), level)
  end
  local p = copy(errors.check_options(v, RECONNECT_KEYS, what .. ": reconnect", level))
  for k, d in pairs(defaults or {}) do if p[k] == nil then p[k] = d end end
  p.backoff = p.backoff or 0.5
  p.max_backoff = p.max_backoff or math.max(10, p.backoff)
  if p.max_backoff < p.backoff then
    error(("%s: reconnect: max_backoff (%g) is less than backoff (%g)"):format(what, p.max_backoff, p.backoff), level)
  end
  return p
end

--- The wait before attempt n+1 after n failed ones: backoff * 2^(n-1), capped at max_backoff,
--- with jitter (between half of it and all of it), so that many clients do not come back at once.
function M.delay(p, n)
  local d = math.min(p.max_backoff, p.backoff * 2 ^ math.max(0, n - 1))
  return d * (0.5 + 0.5 * math.random())
end

--- Calls fn() until it succeeds, fails in a way that is not retried, or p.count more attempts
--- failed; fn returns a result, or nil, msg, CODE, err. on_retry(attempt, msg, code, err, wait)
--- hears each retry before its wait; p.allow(), when set, may say no (what the work consumed
--- cannot be had again). Returns fn's last results, and the attempts made.
function M.run(p, fn, on_retry)
  local sleep = require("sshchain.sched").sleep
  local attempt = 1
  while true do
    local r, msg, code, info = fn(attempt)
    if r ~= nil or not p or attempt > p.count or not M.retryable(code, info) or (p.allow and not p.allow()) then
      return r, msg, code, info, attempt
    end
    local wait = M.delay(p, attempt)
    if on_retry then on_retry(attempt, msg, code, info, wait) end
    sleep(wait)
    attempt = attempt + 1
  end
end

return M
