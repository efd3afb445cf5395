-- transfer_spec: upload, download and server-to-server copy through the jump chain, over SCP and
-- SFTP; progress; SHA-256 verification; failures that lose nothing; a hostile server that sends
-- the records of the legacy protocol's known attacks.
local sshchain = require "sshchain"
local H = require "helper"

local q = sshchain.shell_quote

local function tmpdir()
  local d = H.tmpname()
  assert(os.execute("mkdir -p " .. q(d)))
  return d
end

local function rmrf(p) os.execute("rm -rf " .. q(p)) end

--- Names in a local directory (hidden ones too), sorted.
local function ls(dir)
  local out = H.sh("ls -A " .. q(dir) .. " 2>/dev/null")
  local names = {}
  for n in out:gmatch("[^\n]+") do names[#names + 1] = n end
  table.sort(names)
  return names
end

local function sha(path) return (H.sh("sha256sum " .. q(path)):match("^%x+")) end

local function stat(path, fmt) return (H.sh("stat -c " .. q(fmt) .. " " .. q(path)):gsub("\n$", "")) end

local function rexec(s, cmd)
  local r = assert(s:exec(cmd))
  assert(r.ok, cmd .. ": " .. r.stderr)
  return r.stdout
end

local function rsha(s, path) return (rexec(s, "sha256sum " .. q(path)):match("^%x+")) end

describe("transfer", function()
  local j2, t4, t3
  local R4 = "/home/sclt4/xfer-spec"
  local R3 = "/home/sclt3/xfer-spec"

  setup(function()
    j2 = assert(sshchain.connect { H.spec("j1"), H.spec("j2") })
    t4 = assert(j2:connect(H.spec("t4")))
    t3 = assert(j2:connect(H.spec("t3")))
    rexec(t4, "rm -rf " .. R4 .. " && mkdir -p " .. R4)
    rexec(t3, "rm -rf " .. R3 .. " && mkdir -p " .. R3)
  end)

  teardown(function()
    t4:exec("rm -rf " .. R4)
    t3:exec("rm -rf " .. R3)
    j2:close()
    H.assert_no_leaks(sshchain)
  end)

  for _, proto in ipairs { "scp", "sftp" } do
    describe("over " .. proto, function()
      local o = function(extra)
        local t = { protocol = proto }
        for k, v in pairs(extra or {}) do t[k] = v end
        return t
      end
      local rdir = R4 .. "/" .. proto
      setup(function() rexec(t4, "mkdir -p " .. rdir) end)

      it("uploads and downloads a file intact through two jump hosts", function()
        local dir = tmpdir()
        finally(function() rmrf(dir) end)
        H.sh("head -c 3000001 /dev/urandom > " .. dir .. "/data.bin")
        local ok, info = t4:upload(dir .. "/data.bin", rdir .. "/up.bin", o())
        assert.is_true(ok, info)
        assert.are.equal(3000001, info.bytes)
        assert.are.equal(1, info.files)
        assert.are.equal(sha(dir .. "/data.bin"), rsha(t4, rdir .. "/up.bin"))
        assert(t4:download(rdir .. "/up.bin", dir .. "/down.bin", o()))
        assert.are.equal(sha(dir .. "/data.bin"), sha(dir .. "/down.bin"))
        assert.are.same({ "data.bin", "down.bin" }, ls(dir))
      end)

      it("copies directories recursively, keeping modes and times with preserve", function()
        local dir = tmpdir()
        finally(function() rmrf(dir) end)
        local src = dir .. "/tree"
        H.sh(table.concat({
          "mkdir -p " .. src .. "/sub/deeper " .. src .. "/empty",
          "printf alpha > " .. src .. "/a.txt",
          "head -c 200000 /dev/urandom > " .. src .. "/sub/b.bin",
          "printf gamma > " .. q(src .. "/sub/deeper/sp ace's $x.txt"),
          "chmod 640 " .. src .. "/a.txt", "chmod 750 " .. src .. "/sub",
          "touch -d '2001-09-09 01:46:40' " .. src .. "/a.txt " .. src .. "/sub/b.bin",
        }, " && "))
        assert(t4:upload(src, rdir .. "/tree", o { recursive = true, preserve = true }))
        local listing = rexec(t4, "cd " .. rdir .. "/tree && find . -printf '%p %m %y\\n' | sort")
        assert.are.equal(H.sh("cd " .. src .. " && find . -printf '%p %m %y\\n' | sort"), listing)
        assert.are.equal("1000000000", rexec(t4, "stat -c %Y " .. rdir .. "/tree/a.txt"):gsub("\n", ""))
        -- and back, into an existing directory: it lands inside it under its own name
        local back = dir .. "/back"
        assert(os.execute("mkdir " .. back))
        assert(t4:download(rdir .. "/tree", back, o { recursive = true, preserve = true }))
        assert.are.equal("", H.sh("diff -r " .. src .. " " .. back .. "/tree 2>&1"))
        assert.are.equal("640 1000000000", stat(back .. "/tree/a.txt", "%a %Y"))
        assert.are.equal("750", stat(back .. "/tree/sub", "%a"))
      end)

      it("puts a file inside an existing directory, or at the target name", function()
        local dir = tmpdir()
        finally(function() rmrf(dir) end)
        H.writefile(dir .. "/f.txt", "content\n")
        rexec(t4, "mkdir -p " .. rdir .. "/into")
        assert(t4:upload(dir .. "/f.txt", rdir .. "/into", o()))
        assert(t4:upload(dir .. "/f.txt", rdir .. "/renamed.txt", o()))
        assert.are.equal("content\n", rexec(t4, "cat " .. rdir .. "/into/f.txt " .. rdir .. "/renamed.txt"):sub(1, 8))
        assert(t4:download(rdir .. "/renamed.txt", dir, o()))
        assert(t4:download(rdir .. "/renamed.txt", dir .. "/other.txt", o()))
        assert.are.same({ "f.txt", "other.txt", "renamed.txt" }, ls(dir))
      end)

      it("handles remote paths with spaces, quotes and shell metacharacters", function()
        local dir = tmpdir()
        finally(function() rmrf(dir) end)
        local marker = "sshchain-pwned-" .. proto -- in the remote home, were a command run
        t4:exec("rm -f " .. marker)
        H.writefile(dir .. "/plain.txt", "odd names\n")
        local odd = rdir .. "/it's a $(touch " .. marker .. ") `touch " .. marker .. "` ;& \"name\" *.txt"
        assert(t4:upload(dir .. "/plain.txt", odd, o()))
        assert.are.equal("odd names\n", rexec(t4, "cat " .. q(odd)))
        assert(t4:download(odd, dir .. "/back.txt", o()))
        assert.are.equal("odd names\n", H.readfile(dir .. "/back.txt"))
        assert.are.equal("absent\n", rexec(t4, "test -e " .. marker .. " && echo present || echo absent"))
        local ok, msg, code = t4:upload(dir .. "/plain.txt", rdir .. "/new\nline", o())
        assert.is_nil(ok)
        assert.are.equal("EIO", code, msg)
      end)

      it("reports progress a few times a second at most, with the total", function()
        rexec(t4, "truncate -s 96M " .. rdir .. "/sparse.bin")
        local dir = tmpdir()
        finally(function() rmrf(dir) end)
        local calls, last, t0 = {}, -1, sshchain.core.now()
        local ok, info = t4:download(rdir .. "/sparse.bin", dir .. "/sparse.bin", o {
          progress = function(done, total, name)
            assert.is_true(done >= last)
            last = done
            calls[#calls + 1] = { done, total, name }
          end })
        assert.is_true(ok, info)
        local elapsed = sshchain.core.now() - t0
        assert.is_true(#calls >= 1)
        assert.is_true(#calls <= elapsed * 4 + 3, #calls .. " calls in " .. elapsed .. " s")
        assert.are.same({ 96 * 1048576, 96 * 1048576 }, { calls[#calls][1], calls[#calls][2] })
        if #calls > 1 then assert.are.equal("sparse.bin", calls[1][3]) end
        assert.are.equal(96 * 1048576, tonumber(stat(dir .. "/sparse.bin", "%s")))
      end)

      it("verifies SHA-256 against the remote side's sha256sum", function()
        local dir = tmpdir()
        finally(function() rmrf(dir) end)
        H.sh("mkdir -p " .. dir .. "/v/w && head -c 100000 /dev/urandom > " .. dir .. "/v/w/x.bin && echo y > " .. dir .. "/v/y.txt")
        local ok, info = t4:upload(dir .. "/v", rdir .. "/verified", o { recursive = true, verify = true })
        assert.is_true(ok, info)
        assert.are.equal(2, info.verified)
        ok, info = t4:download(rdir .. "/verified", dir .. "/v2", o { recursive = true, verify = true })
        assert.is_true(ok, info)
        assert.are.equal(2, info.verified)
      end)

      it("fails with EIO naming the remote file when it is missing, leaving nothing", function()
        local dir = tmpdir()
        finally(function() rmrf(dir) end)
        local msg = H.failed({ code = "EIO", stage = "download", hop = 3 },
          t4:download(rdir .. "/no-such-file", dir .. "/x", o()))
        assert.matches("no-such-file", msg, 1, true) -- the file is named
        assert.are.same({}, ls(dir))
      end)

      it("passes the remote side's error text on when an upload fails", function()
        local dir = tmpdir()
        finally(function() rmrf(dir) end)
        H.writefile(dir .. "/f.txt", "x")
        local ok, msg, code = t4:upload(dir .. "/f.txt", "/root/f.txt", o())
        assert.is_nil(ok)
        assert.are.equal("EIO", code)
        assert.matches("Permission denied", msg, 1, true)
        ok, msg, code = t4:upload(dir .. "/missing.txt", rdir .. "/m.txt", o())
        assert.is_nil(ok)
        assert.are.equal("EIO", code)
        assert.matches("missing.txt", msg, 1, true)
      end)

      it("refuses a directory without recursive", function()
        local dir = tmpdir()
        finally(function() rmrf(dir) end)
        local ok, _, code = t4:upload(dir, rdir .. "/d", o())
        assert.is_nil(ok)
        assert.are.equal("EIO", code)
        ok, _, code = t4:download(rdir, dir .. "/d", o())
        assert.is_nil(ok)
        assert.are.equal("EIO", code)
        assert.are.same({}, ls(dir))
      end)
    end)
  end

  describe("between servers", function()
    it("copies a file from one target to another, streamed through this process, verified", function()
      rexec(t3, "head -c 2500000 /dev/urandom > " .. R3 .. "/c.bin")
      local ok, info = sshchain.copy(t3, R3 .. "/c.bin", t4, R4 .. "/c.bin", { verify = true })
      assert.is_true(ok, info)
      assert.are.equal(1, info.verified)
      assert.are.equal(rsha(t3, R3 .. "/c.bin"), rsha(t4, R4 .. "/c.bin"))
    end)

    it("copies a directory tree over SFTP, and from a jump host to a target", function()
      rexec(t3, "mkdir -p " .. R3 .. "/ct/sub && echo one > " .. R3 .. "/ct/one && echo two > " .. R3 .. "/ct/sub/two")
      assert(sshchain.copy(t3, R3 .. "/ct", t4, R4 .. "/ct", { recursive = true, protocol = "sftp", verify = true }))
      assert.are.equal("one\ntwo\n", rexec(t4, "cat " .. R4 .. "/ct/one " .. R4 .. "/ct/sub/two"))
      j2:exec("echo from-j2 > /home/sclj2/from-j2.txt")
      finally(function() j2:exec("rm -f /home/sclj2/from-j2.txt") end)
      assert(sshchain.copy(j2, "/home/sclj2/from-j2.txt", t4, R4 .. "/", { verify = true }))
      assert.are.equal("from-j2\n", rexec(t4, "cat " .. R4 .. "/from-j2.txt"))
    end)

    it("misuse raises: a closed session, a bad option", function()
      assert.has_error(function() sshchain.copy(t3, "a", nil, "b") end)
      assert.has_error(function() t4:upload("a", "b", { bogus = true }) end)
      assert.has_error(function() t4:upload("a", "b", { protocol = "ftp" }) end)
      assert.has_error(function() t4:download(42, "b") end)
    end)
  end)

  describe("remote patterns", function()
    local G = R4 .. "/glob"
    setup(function()
      rexec(t4, "mkdir -p " .. G .. "/sub && cd " .. G .. " && echo a > 'a 1.txt' && echo b > b.txt && "
        .. "echo c > c.log && echo q > \"it's;\\$(touch pwned).txt\" && echo d > sub/d.txt")
    end)

    it("copies what the server's shell expands, as scp does, and never runs what a name holds", function()
      local dir = tmpdir()
      finally(function() rmrf(dir) end)
      local ok, info = t4:download(G .. "/*.txt", dir, { verify = true })
      assert.is_true(ok, info)
      assert.are.same({ "a 1.txt", "b.txt", "it's;$(touch pwned).txt" }, ls(dir))
      assert.are.same({ 3, 3 }, { info.files, info.verified })
      assert.are.equal("", rexec(t4, "ls " .. G .. " | grep -x pwned || true"))
      -- [!...] and recursion: the directory that matches comes whole
      local dir2 = tmpdir()
      finally(function() rmrf(dir2) end)
      assert(t4:download(G .. "/[!ab]*", dir2, { recursive = true, protocol = "sftp" }))
      assert.are.same({ "c.log", "it's;$(touch pwned).txt", "sub" }, ls(dir2))
      assert.are.equal("d\n", H.readfile(dir2 .. "/sub/d.txt"))
      -- a backslash makes the character literal: no file is named "*.txt"
      local r, msg, code = t4:download(G .. "/\\*.txt", dir2)
      assert.is_nil(r)
      assert.are.equal("EIO", code, msg)
    end)

    it("expands a pattern over SFTP without a shell: on the SFTP-only server", function()
      local only = assert(j2:connect(H.spec("sftponly")))
      finally(function() only:close() end)
      local fs = assert(only:sftp())
      assert(fs:mkdir("globonly", { parents = true }))
      for _, n in ipairs { "x1.txt", "x2.txt", "y.log" } do assert(fs:write("globonly/" .. n, n)) end
      local dir = tmpdir()
      finally(function()
        rmrf(dir)
        fs:close()
        fs = nil -- busted keeps this function: its op lives as long as Lua holds it
      end)
      local ok, info = only:download("globonly/x*.txt", dir, { protocol = "sftp" })
      assert.is_true(ok, info)
      assert.are.same({ "x1.txt", "x2.txt" }, ls(dir))
      for _, n in ipairs { "x1.txt", "x2.txt", "y.log" } do fs:remove("globonly/" .. n) end
      fs:rmdir("globonly")
    end)

    it("matches OpenSSH's scp on the same pattern", function()
      local ours, theirs = tmpdir(), tmpdir()
      finally(function() rmrf(ours) rmrf(theirs) end)
      assert(t4:download("/etc/host*", ours))
      local out = H.sh(("timeout 30 scp -q -F %s 't4:/etc/host*' %s < /dev/null 2>&1"):format(H.lab.ssh_config, theirs))
      assert.are.same(ls(theirs), ls(ours), out)
      assert.is_true(#ls(ours) >= 2)
      for _, n in ipairs(ls(ours)) do assert.are.equal(sha(theirs .. "/" .. n), sha(ours .. "/" .. n)) end
    end)

    it("copies a pattern between servers, and says what is wrong: no match, several into a file", function()
      rexec(t3, "rm -rf " .. R3 .. "/gdst && mkdir " .. R3 .. "/gdst")
      local ok, info = sshchain.copy(t4, G .. "/*.txt", t3, R3 .. "/gdst", { verify = true })
      assert.is_true(ok, info)
      assert.are.equal("a 1.txt\nb.txt\nit's;$(touch pwned).txt\n", rexec(t3, "ls " .. R3 .. "/gdst"))
      local dir = tmpdir()
      finally(function() rmrf(dir) end)
      H.failed({ code = "EIO", stage = "download", hop = 3 }, t4:download(G .. "/*.none", dir))
      local msg = H.failed({ code = "EIO", stage = "download" }, t4:download(G .. "/*.txt", dir .. "/one-file"))
      assert.matches("not a directory (3 files match", msg, 1, true)
      assert.are.same({}, ls(dir))
    end)
  end)

  describe("losing nothing", function()
    local big = R4 .. "/big-sparse.bin"
    setup(function() rexec(t4, "truncate -s 3M " .. big) end)

    local function mounted(opts)
      local dir = tmpdir()
      assert(os.execute("mount -t tmpfs -o " .. opts .. " sshchain-spec " .. q(dir)))
      return dir
    end

    it("a download into a full disk fails with EIO and leaves no file", function()
      local dir = mounted("size=1m")
      finally(function() os.execute("umount " .. q(dir)) rmrf(dir) end)
      for _, proto in ipairs { "scp", "sftp" } do
        local ok, msg, code = t4:download(big, dir .. "/big.bin", { protocol = proto })
        assert.is_nil(ok)
        assert.are.equal("EIO", code)
        assert.matches("No space left on device", msg, 1, true)
        assert.are.same({}, ls(dir))
      end
    end)

    it("a download into a read-only directory fails with EIO and leaves no file", function()
      local dir = mounted("ro,size=1m")
      finally(function() os.execute("umount " .. q(dir)) rmrf(dir) end)
      local ok, msg, code = t4:download(big, dir .. "/big.bin")
      assert.is_nil(ok)
      assert.are.equal("EIO", code)
      assert.matches("Read-only file system", msg, 1, true)
      assert.are.same({}, ls(dir))
    end)

    it("an existing file keeps its old content when a download into it fails", function()
      local dir = tmpdir()
      finally(function() rmrf(dir) end)
      H.writefile(dir .. "/keep.txt", "old content")
      local ok = t4:download(R4 .. "/nothing-here", dir .. "/keep.txt")
      assert.is_nil(ok)
      assert.are.equal("old content", H.readfile(dir .. "/keep.txt"))
      assert.are.same({ "keep.txt" }, ls(dir))
    end)

    it("an SFTP upload whose local file shrinks midway fails with EIO and leaves nothing there", function()
      local dir, rdir = tmpdir(), R4 .. "/cut"
      finally(function() rmrf(dir) t4:exec("rm -rf " .. rdir) end)
      rexec(t4, "mkdir -p " .. rdir)
      local src = dir .. "/shrinks.bin"
      assert(os.execute("truncate -s 256M " .. q(src)))
      local cut = false
      local ok, msg, code = t4:upload(src, rdir .. "/shrinks.bin", { protocol = "sftp",
        progress = function(done)
          if done > 0 and not cut then
            cut = true
            assert(os.execute("truncate -s 1000001 " .. q(src)))
          end
        end })
      assert.is_true(cut)
      assert.is_nil(ok)
      assert.are.equal("EIO", code)
      assert.matches("shrank", msg, 1, true)
      -- the temporary file went before the failure was told; the session goes on
      assert.are.equal("", rexec(t4, "ls -A " .. rdir))
      assert.is_true((t4:upload(src, rdir .. "/again.bin", { protocol = "sftp" })))
      assert.are.equal(sha(src), rsha(t4, rdir .. "/again.bin"))
    end)

    it("a remote scp killed mid-transfer fails and leaves no partial file", function()
      rexec(t4, "truncate -s 400M " .. R4 .. "/long.bin")
      local dir = tmpdir()
      finally(function() rmrf(dir) end)
      local killed = false
      local ok, msg, code = t4:download(R4 .. "/long.bin", dir .. "/long.bin", {
        progress = function(done)
          if not killed and done > 0 then
            killed = true
            os.execute("ip netns exec " .. H.lab.ns.t4 .. " pkill -x scp")
          end
        end })
      assert.is_true(killed)
      assert.is_nil(ok)
      assert.are.equal("EIO", code, msg)
      assert.are.same({}, ls(dir))
    end)

    it("a hop killed mid-transfer fails with ECLOSED, leaves no partial file and does not hang", function()
      local s = assert(sshchain.connect({ H.spec("j1"), H.spec("j2"), H.spec("t4") }, { share = false }))
      rexec(s, "truncate -s 400M " .. R4 .. "/long2.bin")
      local dir = tmpdir()
      finally(function() rmrf(dir) s:close() end)
      for _, proto in ipairs { "scp", "sftp" } do
        if proto == "sftp" then
          s:close()
          s = assert(sshchain.connect({ H.spec("j1"), H.spec("j2"), H.spec("t4") }, { share = false }))
        end
        local killed = false
        local ok, msg, code = s:download(R4 .. "/long2.bin", dir .. "/long.bin", { protocol = proto,
          progress = function(done)
            if not killed and done > 0 then
              killed = true
              -- j2's sshd processes serving sclj2: the hop between j1 and the target
              os.execute("ip netns exec " .. H.lab.ns.j2 .. " pkill -f 'sshd: sclj2'")
            end
          end })
        assert.is_true(killed)
        assert.is_nil(ok)
        assert.are.equal("ECLOSED", code, msg)
        assert.are.same({}, ls(dir))
      end
      -- the shared jump sessions of this spec were served by the killed processes too
      t4:close()
      t3:close()
      j2:close()
      j2 = assert(sshchain.connect { H.spec("j1"), H.spec("j2") })
      t4 = assert(j2:connect(H.spec("t4")))
      t3 = assert(j2:connect(H.spec("t3")))
    end)

    it("overwriting an existing setuid file leaves no setuid bit on the new content", function()
      local dir = tmpdir()
      finally(function() rmrf(dir) end)
      H.writefile(dir .. "/tool", "old")
      os.execute("chmod 4755 " .. dir .. "/tool")
      rexec(t4, "printf new > " .. R4 .. "/tool")
      assert(t4:download(R4 .. "/tool", dir .. "/tool"))
      assert.are.equal("new", H.readfile(dir .. "/tool"))
      assert.are.equal("755", stat(dir .. "/tool", "%a"))
    end)

    it("an SFTP download does not follow a symlink loop, and says so", function()
      rexec(t4, "mkdir -p " .. R4 .. "/looped/sub && echo x > " .. R4 .. "/looped/sub/f && ln -sfn . "
        .. R4 .. "/looped/sub/again")
      local dir = tmpdir()
      finally(function() rmrf(dir) end)
      local ok, msg, code = t4:download(R4 .. "/looped", dir, { recursive = true, protocol = "sftp" })
      assert.is_nil(ok)
      assert.are.equal("EIO", code)
      assert.matches("again: symlink to a directory, not followed", msg, 1, true)
      assert.are.equal("x\n", H.readfile(dir .. "/looped/sub/f"))
    end)

    it("a canceled download (the script is interrupted) removes its temporary file", function()
      rexec(t4, "truncate -s 400M " .. R4 .. "/long3.bin")
      local dir = tmpdir()
      finally(function() rmrf(dir) end)
      local ok, err = pcall(t4.download, t4, R4 .. "/long3.bin", dir .. "/long.bin", {
        progress = function(done) if done > 0 then error("stop here") end end })
      assert.is_false(ok)
      assert.matches("stop here", err)
      assert.are.same({}, ls(dir))
    end)
  end)

  describe("a hostile server", function()
    local evil
    setup(function() evil = assert(j2:connect(H.spec("evil"))) end)
    teardown(function() evil:close() end)

    -- downloads ATTACK from the hostile server into a fresh directory inside a fresh parent
    local function attack(name, opts)
      local parent = tmpdir()
      local dir = parent .. "/target"
      assert(os.execute("mkdir " .. dir))
      local ok, msg, code, err = evil:download("/srv/" .. name, dir, opts)
      return { ok = ok, msg = msg, code = code, err = err, dir = dir, parent = parent,
        inside = ls(dir), beside = ls(parent) }
    end

    local function refused(r)
      finally(function() rmrf(r.parent) end)
      assert.is_nil(r.ok)
      assert.are.equal("EPROTO", r.code, r.msg)
      assert.are.same({ "download", 3 }, { r.err.stage, r.err.hop })
      assert.are.same({ "target" }, r.beside) -- nothing written beside the target directory
    end

    it("refuses names that are '..', hold a '/', are absolute or empty", function()
      os.remove("/tmp/escaped.txt")
      for _, a in ipairs { "dotdot", "slash", "absolute", "empty" } do
        local r = attack(a)
        refused(r)
        assert.are.same({}, r.inside, a)
      end
      assert.is_nil(io.open("/tmp/escaped.txt"))
    end)

    it("refuses '.', which would change the target directory itself (CVE-2018-20685)", function()
      local r = attack("dot", { recursive = true })
      refused(r)
      assert.are_not.equal("777", stat(r.dir, "%a"))
    end)

    it("refuses a file other than the one asked for (CVE-2019-6111)", function()
      local r = attack("renamed.txt")
      refused(r)
      assert.are.same({}, r.inside)
      assert.matches(".bashrc", r.msg, 1, true)
    end)

    it("refuses a second entry after the one asked for", function()
      local r = attack("second.txt")
      refused(r)
      assert.are.same({ "second.txt" }, r.inside) -- the one asked for, whole; not extra.txt
      assert.are.equal("good\n", H.readfile(r.dir .. "/second.txt"))
    end)

    it("refuses directories unless recursive, and traversal inside them", function()
      local r = attack("nodir")
      refused(r)
      assert.are.same({}, r.inside)
      r = attack("nested", { recursive = true })
      refused(r)
      assert.are.same({ "nested" }, r.inside)
      assert.are.same({}, ls(r.dir .. "/nested"))
    end)

    it("refuses bad modes and sizes; keeps only permission bits", function()
      for _, a in ipairs { "badmode.txt", "huge.txt" } do
        local r = attack(a)
        refused(r)
        assert.are.same({}, r.inside)
      end
      local r = attack("setuid.txt", { preserve = true })
      finally(function() rmrf(r.parent) end)
      assert.is_true(r.ok, r.msg)
      assert.are.equal("777", stat(r.dir .. "/setuid.txt", "%a")) -- no setuid bit
    end)

    it("does not follow a symlink in the target directory out of it", function()
      local outside = tmpdir()
      finally(function() rmrf(outside) end)
      H.writefile(outside .. "/setuid.txt", "outside, untouched")
      local parent = tmpdir()
      finally(function() rmrf(parent) end)
      os.execute("ln -s " .. outside .. "/setuid.txt " .. parent .. "/setuid.txt")
      os.execute("ln -s " .. outside .. " " .. parent .. "/nodir")
      -- a file: the symlink is replaced, its target left alone
      assert(evil:download("/srv/setuid.txt", parent))
      assert.are.equal("outside, untouched", H.readfile(outside .. "/setuid.txt"))
      assert.are.equal("good\n", H.readfile(parent .. "/setuid.txt"))
      -- a directory: refused, nothing written through the link
      local ok, _, code = evil:download("/srv/nodir", parent, { recursive = true })
      assert.is_nil(ok)
      assert.are.equal("EIO", code)
      assert.are.same({ "setuid.txt" }, ls(outside))
    end)

    it("strips control characters from the server's messages", function()
      local r = attack("noise.txt")
      finally(function() rmrf(r.parent) end)
      assert.is_nil(r.ok)
      assert.are.equal("EIO", r.code)
      assert.matches("red", r.msg, 1, true)
      assert.is_nil(r.msg:find("[%c]"))
    end)

    it("a server that stops in the middle of a file leaves no partial file", function()
      local r = attack("short.txt")
      finally(function() rmrf(r.parent) end)
      assert.is_nil(r.ok)
      assert.are.same({}, r.inside)
    end)

    it("reports text instead of SCP as EPROTO", function()
      local r = attack("text.txt")
      refused(r)
      assert.matches("Welcome to the machine", r.msg, 1, true)
    end)

    it("verify catches a server whose sha256sum disagrees with what was sent", function()
      local r = attack("liar", { verify = true })
      finally(function() rmrf(r.parent) end)
      assert.is_nil(r.ok)
      assert.are.equal("EIO", r.code)
      assert.are.same({ "download", "verify" }, { r.err.stage, r.err.reason })
    end)
  end)

  describe("a server without scp (SFTP only)", function()
    it("fails over SCP with a clear error and works over SFTP", function()
      local s = assert(j2:connect(H.spec("sftponly")))
      finally(function() s:close() end)
      local dir = tmpdir()
      finally(function() rmrf(dir) end)
      H.writefile(dir .. "/f.txt", "over sftp\n")
      local ok, msg, code = s:upload(dir .. "/f.txt", "xfer-sftponly.txt")
      assert.is_nil(ok)
      assert.is_truthy(code == "EIO" or code == "EPROTO", msg)
      assert(s:upload(dir .. "/f.txt", "xfer-sftponly.txt", { protocol = "sftp" }))
      assert(s:download("xfer-sftponly.txt", dir .. "/back.txt", { protocol = "sftp" }))
      assert.are.equal("over sftp\n", H.readfile(dir .. "/back.txt"))
      t4:exec("rm -f xfer-sftponly.txt")
    end)
  end)
end)
