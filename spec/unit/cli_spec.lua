-- unit: what the recipes print (sshchain.cli): units, durations, percentiles, tables, text made
-- safe, and the command line split at "--".
require "sshchain" -- registers the modules compiled into it
local cli = require "sshchain.cli"

local function capture(fn)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  fn(f)
  f:close()
  local out = assert(io.open(path)):read("a")
  os.remove(path)
  return out
end

describe("cli", function()
  it("prints sizes, rates with fractions included, and durations", function()
    assert.are.equal("0 B", cli.bytes(0))
    assert.are.equal("684 B", cli.bytes(683.6)) -- a rate: a float that is not an integer
    assert.are.equal("1.0 KiB", cli.bytes(1024))
    assert.are.equal("683.6 KiB", cli.bytes(700000))
    assert.are.equal("?", cli.bytes(nil))
    assert.are.equal("1:05", cli.duration(65))
    assert.are.equal("1:00:01", cli.duration(3601))
    assert.are.equal("--:--", cli.duration(0 / 0))
    assert.are.equal("--:--", cli.duration(1e300))
  end)

  it("takes nearest-rank percentiles", function()
    local v = {}
    for i = 1, 100 do v[i] = i end
    assert.are.same({ 50, 90, 99, 100 }, { cli.percentile(v, 50), cli.percentile(v, 90), cli.percentile(v, 99),
      cli.percentile(v, 100) })
    assert.is_nil(cli.percentile({}, 50))
  end)

  it("aligns tables on display width", function()
    local out = capture(function(f) cli.table({ "HOST", "OUT" }, { { "n1", "x" }, { "ñandú", "y" } }, f) end)
    assert.are.equal("HOST   OUT\n-----  ---\nn1     x\nñandú  y\n", out)
  end)

  it("makes server text safe: invalid UTF-8 and control characters", function()
    assert.are.equal("a\u{FFFD}b", cli.utf8("a\xffb"))
    assert.are.equal("x?[31my\nz", cli.clean("x\27[31my\r\nz"))
  end)

  it("splits argv at the first --", function()
    local before, after = cli.split_command { "-i", "inv", "t*", "--", "ls", "--", "-l" }
    assert.are.same({ "-i", "inv", "t*" }, before)
    assert.are.same({ "ls", "--", "-l" }, after)
  end)
end)
