-- sshlua_spec: the standalone interpreter behaves like lua5.4, with sshchain built in; and the
-- module exports only luaopen_* symbols (the rock is rock_spec's).
local H = require "helper"

local sshlua = H.build .. "/sshlua"

local function run(args, stdin)
  local cmd = sshlua .. " " .. args .. " 2>&1"
  if stdin then
    local tmp = H.tmpname()
    H.writefile(tmp, stdin)
    cmd = cmd .. " < " .. tmp
    local out, code = H.sh(cmd)
    os.remove(tmp)
    return out, code
  end
  return H.sh(cmd .. " < /dev/null")
end

describe("sshlua", function()
  it("-v prints the version", function()
    local out, code = run("-v")
    assert.are.equal(0, code)
    assert.matches("^sshlua %d+%.%d+%.%d+ %(sshchain; Lua 5%.4", out)
  end)

  it("-e runs code, with sshchain built in", function()
    local out, code = run([[-e 'print(require("sshchain")._VERSION, 1 + 1)']])
    assert.are.equal(0, code)
    assert.are.equal("sshchain 0.1.0\t2\n", out)
  end)

  it("runs a script with arg set as lua5.4 does", function()
    local script = H.tmpname() .. ".lua"
    H.writefile(script, "print(#arg, arg[0] ~= nil, arg[1], arg[2], ...)")
    local out, code = run(script .. " one two")
    os.remove(script)
    assert.are.equal(0, code)
    assert.are.equal("2\ttrue\tone\ttwo\tone\ttwo\n", out)
  end)

  it("prints errors as 'sshlua: message' with a traceback and exits non-zero", function()
    local script = H.tmpname() .. ".lua"
    H.writefile(script, "local function f() error('kaboom') end\nf()\n")
    local out, code = run(script)
    os.remove(script)
    assert.are_not.equal(0, code)
    assert.matches("^sshlua: [^\n]*kaboom", out)
    assert.matches("stack traceback:", out)
  end)

  it("reports a syntax error with exit status 1", function()
    local out, code = run("-e 'x ='")
    assert.are.equal(1, code)
    assert.matches("^sshlua:", out)
  end)

  it("-i gives a REPL that evaluates =expr and expressions", function()
    local out, code = run("-i", "=1+2\nx = 20\nx * 2\n")
    assert.are.equal(0, code)
    assert.matches("\n?> 3\n", out)
    assert.matches("40\n", out)
  end)

  it("runs stdin as a chunk when it is not a terminal", function()
    local out, code = run("", "print('from stdin')")
    assert.are.equal(0, code)
    assert.are.equal("from stdin\n", out)
  end)

  it("-l loads a library into a global", function()
    local out, code = run([[-l sc=sshchain -e 'print(type(sc.connect))']])
    assert.are.equal(0, code)
    assert.are.equal("function\n", out)
  end)

  it("rejects unknown options with usage", function()
    local out, code = run("-z")
    assert.are.equal(1, code)
    assert.matches("unrecognized option '%-z'", out)
    assert.matches("usage:", out)
  end)
end)

describe("module build", function()
  it("exports only luaopen_* symbols", function()
    local out = H.sh("nm -D --defined-only " .. H.build .. "/sshchain.so | awk '$2 ~ /[TD]/ {print $3}'")
    for sym in out:gmatch("%S+") do assert.matches("^luaopen_", sym) end
    assert.matches("luaopen_sshchain\n", out)
  end)
end)
