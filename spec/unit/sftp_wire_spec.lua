-- unit: the SFTP client's parsing of what a server sends (attributes, replies that break the
-- protocol), and its glob patterns.
require "sshchain"
local sftp = require "sshchain.sftp"

describe("sftp wire", function()
  it("parses attributes, and raises (never crashes) on short or random bytes", function()
    local full = string.pack(">I4I8I4I4I4I4I4", 1 | 2 | 4 | 8, 1234, 1000, 1001, 0x81A4, 7, 9)
    local a, pos = sftp.parse_attrs(full, 1)
    assert.are.same({ size = 1234, uid = 1000, gid = 1001, mode = 420, type = "file", atime = 7, mtime = 9 }, a)
    assert.are.equal(#full + 1, pos)
    for cut = 0, #full - 1 do
      assert.is_false((pcall(sftp.parse_attrs, full:sub(1, cut), 1)), "cut at " .. cut)
    end
    math.randomseed(12345)
    for _ = 1, 2000 do
      local bytes = {}
      for i = 1, math.random(0, 40) do bytes[i] = string.char(math.random(0, 255)) end
      pcall(sftp.parse_attrs, table.concat(bytes), 1) -- an error or a table, nothing else
    end
    -- an extended-attribute count that would make it loop for long is refused
    assert.is_false((pcall(sftp.parse_attrs, string.pack(">I4I4", 0x80000000, 0xFFFFFFFF), 1)))
  end)

  it("takes a READ or READDIR answered with STATUS OK for a broken server, not for the end", function()
    -- the bytes a broken server sends, on a channel that hands them in turn (no lab: the parser
    -- alone, as the fuzz target fuzz_sftp_client drives it)
    local function pkt(t, body) return string.pack(">s4", string.char(t) .. body) end
    local version = pkt(2, string.pack(">I4", 3))
    local function ok(id) return pkt(101, string.pack(">I4I4s4s4", id, 0, "", "")) end
    local function handle(id) return pkt(102, string.pack(">I4s4", id, "h")) end
    local function run(chunks, call)
      local i = 0
      local op = { take = function() i = i + 1 return chunks[i] or "" end, done = function() return i >= #chunks end,
        write = function() return true end, cancel = function() end, result = function() end }
      local s = { _take_slot = function() return { c = { exec_start = function() return op end } } end,
        _give_slot = function() end, label = function() return "unit" end, _c = { hop = function() return 1 end } }
      return call(assert(sftp.open(s)))
    end
    -- OPENDIR (id 1) gives a handle, READDIR (2) is answered OK, CLOSE (3) too
    local r, msg, code = run({ version, handle(1), ok(2), ok(3) }, function(fs) return fs:list("/d") end)
    assert.is_nil(r)
    assert.are.equal("EPROTO", code)
    assert.matches("list /d: the server answered OK without the data", msg, 1, true)
    -- OPEN (1) gives a handle, the first READ (2) is answered OK: a failure, not the end of the file
    r, msg, code = run({ version, handle(1), ok(2) }, function(fs) return assert(fs:open("/f")):read(10) end)
    assert.is_nil(r)
    assert.are.equal("EPROTO", code)
    assert.matches("read /f: the server answered OK without the data", msg, 1, true)
  end)

  it("turns glob components into anchored Lua patterns", function()
    local cases = {
      { "*.txt", "a.txt", true }, { "*.txt", "a.txtx", false }, { "?", "ab", false },
      { "[ab]c", "bc", true }, { "[!ab]c", "bc", false }, { "[!ab]c", "xc", true },
      { "[]a]", "]", true }, { "[!]a]", "]", false }, { "[!]a]", "b", true }, { "[a^]", "^", true },
      { "a%b", "a%b", true }, { "a.b", "axb", false }, { "\\*", "*", true }, { "\\*", "x", false },
    }
    for _, c in ipairs(cases) do
      assert.are.equal(c[3], c[2]:find(sftp.glob_pattern(c[1])) ~= nil, c[1] .. " ~ " .. c[2])
    end
  end)
end)
