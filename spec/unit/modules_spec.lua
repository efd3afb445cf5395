-- unit: every module of the library can be required first, on its own, in a fresh interpreter
-- (Lua finds luaopen_sshchain_NAME in sshchain.so), and "sshchain" after it is the same library.
local runner = os.getenv("SSHCHAIN_RUNNER") or "lua5.4"

local function fresh(code)
  local p = io.popen(("%s -e %q 2>&1"):format(runner, code))
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

describe("modules", function()
  local names = {}
  for f in io.popen("ls lua/sshchain"):lines() do
    local n = f:match("^(.+)%.lua$")
    if n then names[#names + 1] = n end
  end

  it("are all found", function()
    assert.is_true(#names >= 15, table.concat(names, " "))
  end)

  for _, n in ipairs(names) do
    it("sshchain." .. n .. " can be required first", function()
      local ok, out = fresh(([[
        local m = require "sshchain.%s"
        assert(type(m) == "table" or type(m) == "function", type(m))
        local sshchain = require "sshchain"
        assert(require("sshchain.errors").interrupted == sshchain.interrupted)
        io.write("ok")
      ]]):format(n))
      assert.is_true(ok, out)
      assert.are.equal("ok", out)
    end)
  end
end)
