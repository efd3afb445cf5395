-- unit: what sshchain.retry tries again and when: the network's failures only, the backoff and
-- its jitter inside their bounds, bad policies refused, and sshchain.parallel's retries (real
-- tasks and timers of the scheduler; no connection is made).
local sshchain = require "sshchain"
local retry = require "sshchain.retry"
local errors = require "sshchain.errors"

describe("retry", function()
  it("retries the network's failures and never what a server or a command decided", function()
    assert.is_true(retry.retryable("ECONNECT", { stage = "connect" }))
    assert.is_true(retry.retryable("ETIMEDOUT", { stage = "handshake", reason = "timeout" }))
    assert.is_true(retry.retryable("ECLOSED", { stage = "exec", reason = "lost" }))
    assert.is_true(retry.retryable("ECLOSED", { stage = "keepalive", reason = "timeout" }))
    assert.is_true(retry.retryable("ECHANNEL", { stage = "exec", reason = "channel refused" }))
    assert.is_true(retry.retryable("ECHANNEL", { stage = "hop channel" }))
    assert.is_false(retry.retryable("ECHANNEL", { stage = "forward", reason = "request refused" }))
    assert.is_false(retry.retryable("ETIMEDOUT", { stage = "exec", reason = "timeout" })) -- ran too long
    for _, code in ipairs { "EAUTH", "EHOSTKEY", "EPROTO", "EIO", "ENOENT", "EACCES", "ECANCELED", "EERROR" } do
      assert.is_false(retry.retryable(code, { stage = "connect" }), code)
    end
    assert.is_false(retry.retryable(nil, nil))
  end)

  it("waits between half and all of backoff * 2^(n-1), capped", function()
    local p = retry.policy({ count = 5, backoff = 0.2, max_backoff = 1 }, "t")
    for n = 1, 6 do
      local full = math.min(1, 0.2 * 2 ^ (n - 1))
      for _ = 1, 50 do
        local d = retry.delay(p, n)
        assert.is_true(d >= full / 2 - 1e-9 and d <= full + 1e-9, ("attempt %d: %g"):format(n, d))
      end
    end
  end)

  it("refuses nonsense policies, naming the option", function()
    assert.has_error(function() retry.policy(-1, "t") end, "t: retries: option 'count' must be a integer from 0 to 1000 (got -1)")
    assert.has_error(function() retry.policy("3", "t") end)
    assert.has_error(function() retry.policy({ tries = 3 }, "t") end, "t: retries: unknown option 'tries'")
    assert.has_error(function() retry.reconnect_policy("yes", "connect") end)
    assert.has_error(function() retry.reconnect_policy({ backoff = -1 }, "connect") end)
    assert.has_error(function() retry.reconnect_policy({ max_wait = 0 / 0 }, "connect") end)
    assert.has_error(function() retry.reconnect_policy({ attempts = 0 }, "connect") end)
    assert.has_error(function() retry.reconnect_policy({ backoff = 5, max_backoff = 1 }, "connect") end,
      "connect: reconnect: max_backoff (1) is less than backoff (5)")
    assert.is_nil(retry.policy(0, "t"))
    assert.is_nil(retry.reconnect_policy(false, "t"))
    assert.are.equal(60, retry.reconnect_policy(true, "t", { max_wait = 60 }).max_wait)
    assert.has_error(function() sshchain.connect("x@y", { reconnect = "always" }) end)
    assert.has_error(function() sshchain.connect("x@y", { reconnect = { wait = 1 } }) end)
  end)

  it("parallel calls again after a network failure, with its attempt number, and not after EAUTH", function()
    local calls, heard = {}, {}
    local t0 = sshchain.core.now()
    local res = sshchain.parallel({ "flaky", "auth", "fine", "raises" }, function(item, i, attempt)
      calls[i] = (calls[i] or 0) + 1
      if item == "flaky" and attempt < 3 then
        return errors.fail("ECONNECT", { stage = "connect", hop = 1, label = "hop 1 x@h:22" }, "refused")
      elseif item == "auth" then
        return errors.fail("EAUTH", { stage = "auth", hop = 1 }, "denied")
      elseif item == "raises" and attempt == 1 then
        error({ code = "ECLOSED", stage = "exec", reason = "lost" })
      end
      return item .. attempt
    end, { retries = { count = 4, backoff = 0.02, max_backoff = 0.05 },
      on_retry = function(item, _, attempt, r, wait) heard[#heard + 1] = { item, attempt, r.code, wait } end })
    assert.are.same({ 3, 1, 1, 2 }, calls)
    assert.are.same({ ok = true, value = "flaky3", attempts = 3 }, res[1])
    assert.are.equal("EAUTH", res[2].code)
    assert.are.equal(1, res[2].attempts)
    assert.are.same({ ok = true, value = "raises2", attempts = 2 }, res[4])
    assert.are.equal(3, #heard)
    for _, h in ipairs(heard) do assert.is_true(h[4] > 0 and h[4] <= 0.05) end
    assert.is_true(sshchain.core.now() - t0 >= 0.02, "the backoff was waited")
  end)

  it("stops after count more attempts and returns the last failure", function()
    local n = 0
    local res = sshchain.parallel({ 1 }, function()
      n = n + 1
      return errors.fail("ETIMEDOUT", { stage = "handshake", reason = "timeout", hop = 2 }, "slow")
    end, { retries = { count = 2, backoff = 0.001 } })
    assert.are.equal(3, n)
    assert.are.equal(3, res[1].attempts)
    assert.are.equal("ETIMEDOUT", res[1].code)
    assert.are.equal(2, res[1].hop)
  end)
end)
