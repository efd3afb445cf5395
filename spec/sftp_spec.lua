-- sftp_spec: the SFTP client object (s:sftp()) through j1 and j2: listing, attributes, making and
-- removing, renames, links, modes and times, statvfs, globs, whole files, open files with
-- read-ahead, seeks and pipelined writes; failures as ENOENT, EACCES, EEXIST; names with
-- newlines; an SFTP-only server; the session's close ending it.
local sshchain = require "sshchain"
local H = require "helper"

local function sha(data)
  local tmp = H.tmpname()
  H.writefile(tmp, data)
  local out = H.sh("sha256sum < " .. tmp):match("^%x+")
  os.remove(tmp)
  return out
end

describe("sftp", function()
  local s, fs
  local D = "sftp-spec"
  setup(function()
    s = assert(sshchain.connect(H.chain("t1")))
    assert(s:exec(("rm -rf %s && mkdir -p %s/d && cd %s && echo hi > a && ln -s a l && printf x > '.hidden'")
      :format(D, D, D)))
    fs = assert(s:sftp())
  end)
  teardown(function()
    if fs then fs:close() end
    fs = nil -- its op lives as long as Lua holds it
    s:exec("rm -rf " .. D)
    s:close()
    H.assert_no_leaks(sshchain)
  end)

  it("lists a directory with each entry's type, size, mode, owner, times and link target", function()
    local list = assert(fs:list(D))
    local by = {}
    for _, e in ipairs(list) do by[e.name] = e end
    assert.are.same({ ".hidden", "a", "d", "l" }, (function()
      local n = {}
      for i, e in ipairs(list) do n[i] = e.name end
      return n
    end)())
    assert.are.same({ "file", 3, 420 }, { by.a.type, by.a.size, by.a.mode })
    assert.are.equal("dir", by.d.type)
    assert.are.same({ "link", "a" }, { by.l.type, by.l.target })
    local uid = tonumber((assert(s:exec("id -u")).stdout:match("%d+")))
    assert.are.equal(uid, by.a.uid)
    assert.is_true(by.a.mtime > 1e9 and by.a.atime > 1e9)
    H.failed({ code = "ENOENT", stage = "sftp", hop = 3 }, fs:list(D .. "/none"))
  end)

  it("stats, lstats, resolves paths and reads links", function()
    assert.are.equal("file", assert(fs:stat(D .. "/l")).type)
    assert.are.equal("link", assert(fs:lstat(D .. "/l")).type)
    assert.are.equal("/home/sclt1/" .. D, fs:realpath(D))
    assert.are.equal("a", fs:readlink(D .. "/l"))
    local msg = H.failed({ code = "ENOENT", stage = "sftp" }, fs:stat(D .. "/nope"))
    assert.matches("stat " .. D .. "/nope", msg, 1, true)
    H.failed({ code = "EACCES", stage = "sftp" }, fs:stat("/root/x"))
  end)

  it("makes directories (with parents), removes them and files; says EEXIST and EACCES", function()
    assert.is_true(fs:mkdir(D .. "/m", { mode = tonumber("700", 8) }))
    assert.are.equal(tonumber("700", 8), fs:stat(D .. "/m").mode)
    H.failed({ code = "EEXIST", stage = "sftp" }, fs:mkdir(D .. "/m"))
    assert.is_true(fs:mkdir(D .. "/p/q/r", { parents = true }))
    assert.is_true(fs:mkdir(D .. "/p/q/r", { parents = true })) -- there already: fine, as mkdir -p
    assert.are.equal("dir", fs:stat(D .. "/p/q/r").type)
    assert.is_true(fs:rmdir(D .. "/p/q/r"))
    H.failed({ code = "ENOENT" }, fs:rmdir(D .. "/p/q/r"))
    H.failed({ code = "EACCES" }, fs:remove("/etc/passwd"))
    H.failed({ code = "EACCES" }, fs:mkdir("/etc/sshchain-no"))
  end)

  it("renames, refusing to replace unless overwrite, and makes symlinks", function()
    assert(fs:write(D .. "/r1", "one"))
    assert(fs:write(D .. "/r2", "two"))
    H.failed({ code = "EEXIST" }, fs:rename(D .. "/r1", D .. "/r2"))
    assert.are.equal("two", fs:read(D .. "/r2"))
    assert.is_true(fs:rename(D .. "/r1", D .. "/r2", { overwrite = true }))
    assert.are.equal("one", fs:read(D .. "/r2"))
    H.failed({ code = "ENOENT" }, fs:stat(D .. "/r1"))
    assert.is_true(fs:symlink("r2", D .. "/s"))
    assert.are.equal("one", fs:read(D .. "/s"))
    H.failed({ code = "EEXIST" }, fs:symlink("r2", D .. "/s"))
  end)

  it("sets modes and times, and reports the file system's figures", function()
    assert(fs:chmod(D .. "/a", tonumber("640", 8)))
    assert.are.equal("640", assert(s:exec("stat -c %a " .. D .. "/a")).stdout:match("%d+"))
    assert(fs:utime(D .. "/a", 1000000000, 1234567890))
    assert.are.equal("1234567890", assert(s:exec("stat -c %Y " .. D .. "/a")).stdout:match("%d+"))
    local v = assert(fs:statvfs(D))
    local df = assert(s:exec("stat -f -c '%S %b' " .. D)).stdout
    assert.are.equal(df:match("^(%d+) (%d+)"), tostring(v.frsize), nil)
    assert.are.equal(tonumber(df:match(" (%d+)")), v.blocks)
    assert.has_error(function() fs:chmod(D .. "/a", "644") end)
  end)

  it("globs as a shell does: * and ? skip a leading dot, [..], [!..] and directories", function()
    local G = D .. "/glob"
    assert(s:exec(("mkdir -p %s/sub1 %s/sub2 && cd %s && touch a b cc .hid sub1/x sub2/x sub2/y"):format(G, G, G)))
    assert.are.same({ G .. "/a", G .. "/b" }, fs:glob(G .. "/?"))
    assert.are.same({ G .. "/.hid" }, fs:glob(G .. "/.h*"))
    assert.are.same({ G .. "/a", G .. "/cc" }, fs:glob(G .. "/[ac]*"))
    assert.are.same({ G .. "/b", G .. "/cc", G .. "/sub1", G .. "/sub2" }, fs:glob(G .. "/[!a]*"))
    assert.are.same({ G .. "/sub1/x", G .. "/sub2/x", G .. "/sub2/y" }, fs:glob(G .. "/sub*/*"))
    assert.are.same({}, fs:glob(G .. "/*.none"))
    local theirs = {}
    for line in assert(s:exec("ls -d /etc/host*")).stdout:gmatch("[^\n]+") do theirs[#theirs + 1] = line end
    table.sort(theirs)
    assert.are.same(theirs, fs:glob("/etc/host*"))
  end)

  it("reads and writes whole files, names with a newline included", function()
    local data = ("0123456789abcdef"):rep(200000) -- 3.2 MB: many requests in flight
    assert(fs:write(D .. "/big", data))
    assert.are.equal(sha(data), assert(s:exec("sha256sum < " .. D .. "/big")).stdout:match("^%x+"))
    assert.are.equal(sha(data), sha(assert(fs:read(D .. "/big"))))
    local odd = D .. "/new\nline"
    assert(fs:write(odd, "odd"))
    assert.are.equal("odd", fs:read(odd))
    local names = {}
    for _, e in ipairs(fs:list(D)) do names[e.name] = true end
    assert.is_true(names["new\nline"])
  end)

  it("opens files: read(n) with read-ahead, seek as Lua's, pipelined writes, append; bad modes raise", function()
    local data = {}
    for i = 1, 20000 do data[i] = ("%08d\n"):format(i) end
    data = table.concat(data)
    assert(fs:write(D .. "/f", data))
    local f = assert(fs:open(D .. "/f"))
    assert.are.equal(data:sub(1, 9), f:read(9))
    assert.are.equal(9, f:seek())
    assert.are.equal(#data, f:seek("end"))
    assert.is_nil(f:read(1)) -- at the end
    assert.are.equal(90000, f:seek("set", 90000))
    assert.are.equal(data:sub(90001, 90018), f:read(18))
    assert.are.equal(data:sub(90019), f:read(#data)) -- the rest, less than asked
    assert.is_true(f:close())
    assert.is_true(f:close())
    assert.has_error(function() f:read(1) end)
    local w = assert(fs:open(D .. "/wplus", "w+"))
    for i = 1, 100 do assert(w:write(("%05d "):format(i):rep(200))) end
    assert.are.equal(0, w:seek("set", 0))
    assert.are.equal("00001 ", w:read(6))
    assert(w:close())
    assert.are.equal(120000, fs:stat(D .. "/wplus").size)
    local a = assert(fs:open(D .. "/wplus", "a"))
    assert(a:write("END"))
    assert(a:close())
    assert.are.equal("END", assert(s:exec("tail -c 3 " .. D .. "/wplus")).stdout)
    for _, mode in ipairs { "rw", "x", "", 5 } do
      assert.has_error(function() fs:open(D .. "/wplus", mode) end)
    end
    H.failed({ code = "ENOENT" }, fs:open(D .. "/none"))
  end)

  it("reads in small pieces across the read-ahead's chunks, and knows its place in a+ mode", function()
    local data = {}
    for i = 1, 30000 do data[i] = ("%07d,"):format(i) end
    data = table.concat(data) -- 240000 bytes: several 32 KiB chunks
    assert(fs:write(D .. "/small", data))
    local f = assert(fs:open(D .. "/small"))
    local parts = {}
    for _ = 1, 100000 do
      local c = f:read(999)
      if not c then break end
      parts[#parts + 1] = c
    end
    assert.are.equal(#data, #table.concat(parts))
    assert.is_true(table.concat(parts) == data, "the pieces do not make the file")
    assert(f:close())
    local a = assert(fs:open(D .. "/small", "a+"))
    assert(a:write("TAIL"))
    assert.are.equal(#data + 4, a:seek())
    assert.are.equal(#data, a:seek("set", #data))
    assert.are.equal("TAIL", a:read(10))
    assert(a:close())
  end)

  it("serves calls from several tasks at once on one channel", function()
    for i = 1, 8 do assert(fs:write(("%s/t%d"):format(D, i), ("%d"):format(i):rep(100000))) end
    local results = sshchain.parallel({ 1, 2, 3, 4, 5, 6, 7, 8 }, function(i)
      return #assert(fs:read(("%s/t%d"):format(D, i)))
    end)
    for i = 1, 8 do assert.are.same({ ok = true, value = 100000 }, results[i]) end
  end)

  it("gives one open file's calls from several tasks their turns, each call whole", function()
    local data = {}
    for i = 1, 40000 do data[i] = ("%07d,"):format(i) end
    data = table.concat(data) -- 320000 bytes: each read spans chunks of the read-ahead
    assert(fs:write(D .. "/shared", data))
    local f = assert(fs:open(D .. "/shared"))
    local got = {}
    local results = sshchain.parallel({ 1, 2, 3, 4 }, function()
      for _ = 1, 100 do
        local c = f:read(50000)
        if not c then return true end
        got[#got + 1] = c -- in the order the reads returned
      end
    end)
    for i = 1, 4 do assert.are.same({ ok = true, value = true }, results[i]) end
    assert.are.equal(#data, #table.concat(got))
    assert.is_true(table.concat(got) == data, "four tasks' reads, in the order they returned, do not make the file")
    assert(f:close())
    local w = assert(fs:open(D .. "/shared-w", "w"))
    local order = {}
    results = sshchain.parallel({ 1, 2, 3, 4, 5, 6 }, function(i)
      for k = 1, 3 do
        local block = ("%d%d"):format(i, k):rep(35000) -- 70000 bytes: three WRITEs each
        assert(w:write(block))
        order[#order + 1] = block
      end
      return true
    end)
    for i = 1, 6 do assert.are.same({ ok = true, value = true }, results[i]) end
    assert(w:close())
    assert.is_true(fs:read(D .. "/shared-w") == table.concat(order), "six tasks' writes overlap")
    -- a close waits for the read before it; a read that waited behind a close fails ECLOSED
    local r = assert(fs:open(D .. "/shared"))
    local t = sshchain.spawn(function() return r:read(300000) end)
    local c = sshchain.spawn(function() return r:close() end)
    local late = sshchain.spawn(function() return r:read(10) end)
    assert.are.equal(300000, #t:wait())
    assert.is_true(c:wait())
    H.failed({ code = "ECLOSED", stage = "sftp" }, late:wait())
    local ok, err = pcall(r.read, r, 1) -- a call on a closed file is misuse: it raises
    assert.is_false(ok)
    assert.matches("the SFTP file is closed", err, 1, true)
  end)

  it("works on a server that only speaks SFTP, and ends with its session", function()
    local j2 = assert(sshchain.connect { H.spec("j1"), H.spec("j2") })
    local only = assert(j2:connect(H.spec("sftponly")))
    local ofs = assert(only:sftp())
    assert(ofs:write("sftp-spec-only.txt", "only sftp"))
    assert.are.equal("only sftp", ofs:read("sftp-spec-only.txt"))
    assert(ofs:remove("sftp-spec-only.txt"))
    only:close()
    H.failed({ code = "ECLOSED", stage = "sftp" }, ofs:stat("."))
    ofs:close()
    j2:close()
  end)
end)
