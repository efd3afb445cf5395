-- unit: the failure results (sshchain.errors): one fail(), the CODE of a message, option checks.
require "sshchain" -- registers the modules compiled into it
local errors = require "sshchain.errors"

describe("errors", function()
  it("fail() gives nil, the message, the CODE and the same failure as data", function()
    local r, msg, code, err = errors.fail("ETIMEDOUT", { label = "hop 2 u@h:22", hop = 2, stage = "exec",
      reason = "timeout" }, "timed out after %gs", 1.5)
    assert.is_nil(r)
    assert.are.equal("ETIMEDOUT: hop 2 u@h:22: exec: timed out after 1.5s", msg)
    assert.are.equal("ETIMEDOUT", code)
    assert.are.same({ code = "ETIMEDOUT", message = msg, stage = "exec", reason = "timeout", hop = 2 }, err)
  end)

  it("finds the CODE of a message, also behind the position error() and assert() add", function()
    assert.are.equal("EAUTH", errors.code_of("EAUTH: hop 1 u@h:22: auth: denied"))
    assert.are.equal("EAUTH", errors.code_of("script.lua:12: EAUTH: hop 1 u@h:22: auth: denied"))
    assert.are.equal("EERROR", errors.code_of("script.lua:12: attempt to index a nil value"))
    assert.are.equal("EERROR", errors.code_of({}))
    assert.are.equal("EIO", errors.code_of({ code = "EIO" }))
    local ok, e = pcall(function() assert(nil, "ECLOSED: hop 3 x: connection lost") end)
    assert.is_false(ok)
    assert.are.equal("ECLOSED", errors.code_of(e))
  end)

  it("checks options: unknown ones, types, ranges, NUL bytes, choices", function()
    local schema = { n = { type = "number", integer = true, min = 1, max = 9 }, s = "string",
      p = { type = "string", values = { "scp", "sftp" } }, b = { type = "string", nul = true } }
    assert.are.same({}, errors.check_options(nil, schema, "f"))
    assert.has_error(function() errors.check_options({ x = 1 }, schema, "f") end, "f: unknown option 'x'")
    for _, bad in ipairs { { n = 0 }, { n = 10 }, { n = 2.5 }, { n = 0 / 0 }, { n = "3" }, { s = "a\0b" },
      { p = "ftp" } } do
      assert.has_error(function() errors.check_options(bad, schema, "f") end)
    end
    assert.is_table(errors.check_options({ n = 3, s = "x", p = "sftp", b = "a\0b" }, schema, "f"))
  end)

  it("knows the interruption value by identity, not by text", function()
    assert.is_true(errors.is_interrupted(errors.interrupted))
    assert.is_false(errors.is_interrupted("interrupted!"))
    assert.are.equal("interrupted!", tostring(errors.interrupted))
  end)
end)
