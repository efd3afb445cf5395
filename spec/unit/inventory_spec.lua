-- unit: inventories (sshchain.inventory): validation, selection by host, group and glob, and the
-- chains `via` builds.
require "sshchain" -- registers the modules compiled into it
local inventory = require "sshchain.inventory"

local function inv(t) return assert(inventory.from_table(t, "test")) end

describe("inventory", function()
  local base = {
    defaults = { user = "root", timeout = 10 },
    hosts = {
      gw = { host = "10.0.0.1", user = "ops" },
      jump = { host = "10.1.0.1", port = 2222, via = "gw" },
      n1 = { host = "10.2.0.1", via = "jump" },
      n2 = { host = "10.2.0.2", via = "jump" },
      n10 = { host = "10.2.0.10", via = { "gw", "jump" } },
    },
    groups = { nodes = { "n*" }, all = { "nodes", "gw" }, empty = {} },
  }

  it("selects hosts, groups (nested) and globs in the order given, once each", function()
    local i = inv(base)
    assert.are.same({ "n1", "n10", "n2", "gw" }, assert(i:select { "all" }))
    assert.are.same({ "n2", "n1" }, assert(i:select { "n2", "n1", "n2" }))
    assert.are.same({ "n1", "n2" }, assert(i:select { "n[12]" }))
    local none, err = i:select { "nosuch" }
    assert.is_nil(none)
    assert.matches('"nosuch"', err)
    assert.is_nil((i:select { "empty" }))
  end)

  it("builds chains through via, defaults applied, host named", function()
    local chain = assert(inv(base):chain("n1"))
    assert.are.same({ "gw", "jump", "n1" }, { chain[1].name, chain[2].name, chain[3].name })
    assert.are.same({ "ops", "root", "root" }, { chain[1].user, chain[2].user, chain[3].user })
    assert.are.equal(2222, chain[2].port)
    assert.are.equal(3, #assert(inv(base):chain("n10")))
  end)

  it("refuses a via to no host, a host that is also a group, and a via loop", function()
    assert.is_nil((inventory.from_table({ hosts = { a = { via = "nope" } } }, "t")))
    assert.is_nil((inventory.from_table({ hosts = { a = {} }, groups = { a = { "a" } } }, "t")))
    local loop = inv { hosts = { a = { via = "b" }, b = { via = "a" } } }
    local c, err = loop:chain("a")
    assert.is_nil(c)
    assert.matches("loop", err)
  end)

  it("turns globs into anchored patterns, with classes and negated classes", function()
    local p = inventory.glob_to_pattern
    assert.is_truthy(("node-1.x"):match(p("node-?.x")))
    assert.is_falsy(("node-10.x"):match(p("node-?.x")))
    assert.is_truthy(("n3"):match(p("n[1-4]")))
    assert.is_falsy(("n5"):match(p("n[!5]")))
    assert.is_falsy(("an1"):match(p("n*")))
  end)
end)
