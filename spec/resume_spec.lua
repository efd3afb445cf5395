-- Resumable transfers (issue 16): a download or upload interrupted at about half keeps its
-- partial (private, found again by name), the next transfer with resume = true checks the
-- partial against the source's first bytes and sends only the rest; a partial that does not match
-- is discarded, said once, and the file starts again; retries resume instead of restarting.
-- Interruptions are real: the middle hop's per-connection sshd is killed, or the transfer is
-- canceled from its progress callback as an interrupt would.
local sshchain = require "sshchain"
local H = require "helper"

local SIZE = 24 * 1024 * 1024
local HALF = SIZE // 2
local REMOTE = "/tmp/sshchain-resume.bin"
local J2_NS = "scl-j2"

local function sh(cmd) return os.execute(cmd) end

local function chain(over)
  local o = { keepalive = 1, keepalive_count = 2, timeout = 3 }
  for k, v in pairs(over or {}) do o[k] = v end
  return { H.spec("j1", o), H.spec("j2", o), H.spec("t1", o) }
end

local function kill_j2() sh("ip netns exec " .. J2_NS .. " pkill -KILL -f '^sshd: sclj2'") end

--- Runs fn(s) with warnings collected; returns them.
local function warnings_during(fn)
  local said, before = {}, sshchain.settings.on_warning
  sshchain.settings.on_warning = function(msg) said[#said + 1] = msg end
  local ok, err = pcall(fn)
  sshchain.settings.on_warning = before
  if not ok then error(err, 0) end
  return said
end

--- A new local directory, removed when the test ends.
local function fresh_dir()
  local dir = H.tmpname()
  assert(sh("mkdir " .. dir))
  finally(function() sh("rm -rf " .. dir) end)
  return dir
end

local function local_mode(path) return H.sh("stat -c %a " .. path):match("%d+") end

describe("resume", function()
  local remote_sha, local_src, local_sha
  setup(function()
    local s = assert(sshchain.connect(chain()))
    local r = assert(s:exec(("head -c %d /dev/urandom > %s && sha256sum %s"):format(SIZE, REMOTE, REMOTE)))
    remote_sha = r.stdout:match("^(%x+)")
    s:close()
    local_src = H.tmpname() .. "-up.bin"
    H.sh(("head -c %d /dev/urandom > %s"):format(SIZE, local_src))
    local_sha = H.sh("sha256sum " .. local_src):match("^%x+")
  end)
  teardown(function()
    os.remove(local_src)
    local s = sshchain.connect(chain())
    if s then
      s:exec("rm -f " .. REMOTE)
      s:close()
    end
    sh("ip netns exec " .. J2_NS .. " pkill -CONT -f '^sshd: sclj2'")
  end)
  after_each(function() H.assert_no_leaks(sshchain) end)

  --- A download into dir canceled (an error in its progress callback) once `at` bytes are done.
  local function broken_download(s, dir, at, opts)
    local o = { resume = true, progress_every = 0.005, progress = function(done) if done >= at then error("stop here", 0) end end }
    for k, v in pairs(opts or {}) do o[k] = v end
    local ok, err = pcall(s.download, s, REMOTE, dir .. "/", o)
    assert.is_false(ok)
    assert.are.equal("stop here", err)
  end

  it("a download interrupted at half keeps a private partial; the next sends only the rest, verified", function()
    local dir = fresh_dir()
    local s = assert(sshchain.connect(chain()))
    broken_download(s, dir, HALF)
    local partial = dir .. "/.sshchain-resume.bin.sshchain-partial"
    local kept = #H.readfile(partial)
    assert.is_true(kept >= HALF and kept < SIZE, "kept " .. kept)
    assert.are.equal("600", local_mode(partial))
    assert.is_nil(io.open(dir .. "/sshchain-resume.bin"), "nothing under the final name")
    local ok, r = s:download(REMOTE, dir .. "/", { resume = true, verify = true })
    assert.is_true(ok, r)
    assert.are.equal(kept, r.resumed)
    assert.are.equal(SIZE - kept, r.bytes, "only the rest was sent")
    assert.are.equal(1, r.verified)
    assert.are.equal(remote_sha, H.sh("sha256sum " .. dir .. "/sshchain-resume.bin"):match("^%x+"))
    assert.is_nil(io.open(partial), "the partial took the final name")
    assert.are_not.equal("600", local_mode(dir .. "/sshchain-resume.bin"))
    s:close()
  end)

  it("a download cut by a killed hop resumes with retries on a session that reconnects", function()
    local dir = fresh_dir()
    local s = assert(sshchain.connect(chain(), { reconnect = { backoff = 0.2, max_backoff = 1, max_wait = 20 } }))
    local killed, retried = false, {}
    local ok, r = s:download(REMOTE, dir .. "/got.bin", { resume = true, timeout = 5,
      retries = { count = 3, backoff = 0.2 }, progress_every = 0.005,
      on_retry = function(n, msg, code) retried[#retried + 1] = { n, code, msg } end,
      progress = function(done)
        if not killed and done >= HALF then
          killed = true
          kill_j2()
        end
      end })
    assert.is_true(ok, r)
    assert.is_true(killed)
    assert.are.equal(1, #retried)
    assert.are.equal("ECLOSED", retried[1][2])
    assert.are.equal(1, select(2, retried[1][3]:gsub("sclt1@", "")), "the target named once: " .. retried[1][3])
    assert.matches("hop 2 sclj2@", retried[1][3], 1, true)
    assert.are.equal(2, r.attempts)
    assert.is_true(r.resumed > 0 and r.bytes < SIZE, ("resumed %s, sent %s"):format(r.resumed, r.bytes))
    assert.are.equal(SIZE, r.resumed + r.bytes)
    assert.are.equal(remote_sha, H.sh("sha256sum " .. dir .. "/got.bin"):match("^%x+"))
    assert.is_nil(io.open(dir .. "/.got.bin.sshchain-partial"))
    s:close()
  end)

  it("a partial whose bytes are not the source's is discarded, said once, and the file starts again", function()
    local dir = fresh_dir()
    local s = assert(sshchain.connect(chain()))
    broken_download(s, dir, HALF)
    local partial = dir .. "/.sshchain-resume.bin.sshchain-partial"
    assert(sh("printf '\\377\\376\\375\\374' | dd of=" .. partial .. " conv=notrunc status=none")) -- other bytes
    local ok, r
    local said = warnings_during(function() ok, r = s:download(REMOTE, dir .. "/", { resume = true }) end)
    assert.is_true(ok, r)
    assert.are.equal(1, #said, table.concat(said, "\n"))
    assert.matches("does not match", said[1])
    assert.matches("discarded, starting again", said[1])
    assert.is_true(r.restarted)
    assert.are.equal(0, r.resumed)
    assert.are.equal(SIZE, r.bytes)
    assert.are.equal(remote_sha, H.sh("sha256sum " .. dir .. "/sshchain-resume.bin"):match("^%x+"))
    -- a partial longer than the source: the same
    H.writefile(dir .. "/.small.sshchain-partial", ("x"):rep(100))
    assert(s:exec("printf abc > /tmp/sshchain-resume-small"))
    said = warnings_during(function()
      ok, r = s:download("/tmp/sshchain-resume-small", dir .. "/small", { resume = true })
    end)
    assert.is_true(ok, r)
    assert.are.equal(1, #said)
    assert.matches("holds 100 bytes, the source 3", said[1])
    assert.are.equal("abc", H.readfile(dir .. "/small"))
    s:exec("rm -f /tmp/sshchain-resume-small")
    s:close()
  end)

  it("an upload over SFTP interrupted at half keeps its remote partial (0600); the next sends the rest", function()
    local s = assert(sshchain.connect(chain()))
    local rdest = "/tmp/sshchain-resume-up.bin"
    local rpartial = "/tmp/.sshchain-resume-up.bin.sshchain-partial"
    assert(s:exec("rm -f " .. rdest .. " " .. rpartial .. "; echo old > " .. rdest))
    local ok, err = pcall(s.upload, s, local_src, rdest, { resume = true, progress_every = 0.005,
      progress = function(done) if done >= HALF then error("stop here", 0) end end })
    assert.is_false(ok)
    assert.are.equal("stop here", err)
    local st = assert(s:exec("stat -c '%a %s' " .. rpartial .. "; cat " .. rdest))
    local mode, kept = st.stdout:match("^(%d+) (%d+)\n")
    assert.are.equal("600", mode)
    kept = tonumber(kept)
    assert.is_true(kept > 0 and kept < SIZE, "kept " .. tostring(kept))
    assert.matches("\nold\n$", st.stdout, "the old file stays until the new one is complete")
    local r
    ok, r = s:upload(local_src, rdest, { resume = true, verify = true })
    assert.is_true(ok, r)
    assert.are.equal(kept, r.resumed)
    assert.are.equal(SIZE - kept, r.bytes)
    local there = assert(s:exec("sha256sum " .. rdest .. "; ls -a /tmp | grep -c sshchain-partial; stat -c %a " .. rdest))
    assert.are.equal(local_sha, there.stdout:match("^%x+"))
    assert.matches("\n0\n", there.stdout, "the partial is gone")
    assert.are.equal(H.sh("stat -c %a " .. local_src):match("%d+"), there.stdout:match("(%d+)\n$"))
    s:exec("rm -f " .. rdest)
    s:close()
  end)

  it("a server-to-server copy resumes too, verified by both remote digests", function()
    local s = assert(sshchain.connect(chain()))
    local d = assert(sshchain.connect({ H.spec("j1"), H.spec("j2"), H.spec("t2") }))
    local rdest = "/tmp/sshchain-resume-copy.bin"
    assert(d:exec("rm -f " .. rdest .. " /tmp/.sshchain-resume-copy.bin.sshchain-partial"))
    local ok, err = pcall(sshchain.copy, s, REMOTE, d, rdest, { resume = true, progress_every = 0.005,
      progress = function(done) if done >= HALF then error("stop here", 0) end end })
    assert.is_false(ok)
    assert.are.equal("stop here", err)
    local r
    ok, r = sshchain.copy(s, REMOTE, d, rdest, { resume = true, verify = true })
    assert.is_true(ok, r)
    assert.is_true(r.resumed > 0 and r.bytes < SIZE)
    assert.are.equal(1, r.verified)
    assert.are.equal(remote_sha, assert(d:exec("sha256sum " .. rdest)).stdout:match("^%x+"))
    d:exec("rm -f " .. rdest)
    d:close()
    s:close()
  end)

  it("bad input: resume over SCP raises; a partial that is a symlink is never followed", function()
    local s = assert(sshchain.connect(chain()))
    local ok, err = pcall(s.download, s, REMOTE, "/tmp/x", { resume = true, protocol = "scp" })
    assert.is_false(ok)
    assert.matches("resume needs SFTP", err)
    ok, err = pcall(s.download, s, REMOTE, "/tmp/x", { resume = "yes" })
    assert.is_false(ok)
    assert.matches("option 'resume' must be a boolean", err)
    local dir = fresh_dir()
    H.writefile(dir .. "/victim", "keep me")
    assert(sh("ln -s " .. dir .. "/victim " .. dir .. "/.f.sshchain-partial"))
    local r, said
    said = warnings_during(function() ok, r = s:download(REMOTE, dir .. "/f", { resume = true }) end)
    assert.is_true(ok, r)
    assert.are.equal(1, #said)
    assert.are.equal("keep me", H.readfile(dir .. "/victim"))
    assert.are.equal(remote_sha, H.sh("sha256sum " .. dir .. "/f"):match("^%x+"))
    assert.is_nil(io.open(dir .. "/.f.sshchain-partial"), "the link was removed, not written through")
    -- a link to a file that begins as the source does is not written through either
    local head = assert(s:exec("head -c 1000 " .. REMOTE .. " > /tmp/sshchain-head && echo ok"))
    assert.are.equal("ok\n", head.stdout)
    assert(s:download("/tmp/sshchain-head", dir .. "/victim2"))
    assert(sh("ln -s " .. dir .. "/victim2 " .. dir .. "/.g.sshchain-partial"))
    local msg, code
    r, msg, code = s:download(REMOTE, dir .. "/g", { resume = true })
    assert.is_nil(r)
    assert.are.equal("EIO", code)
    assert.matches("partial", msg)
    assert.are.equal(1000, #H.readfile(dir .. "/victim2"))
    assert.is_nil(io.open(dir .. "/g"))
    s:exec("rm -f /tmp/sshchain-head")
    s:close()
  end)

  it("a directory with resume is copied whole, said once", function()
    local s = assert(sshchain.connect(chain()))
    assert(s:exec("rm -rf /tmp/sshchain-resume-dir; mkdir -p /tmp/sshchain-resume-dir/a && echo x > /tmp/sshchain-resume-dir/a/f"))
    local dir = fresh_dir()
    local ok, r
    local said = warnings_during(function()
      ok, r = s:download("/tmp/sshchain-resume-dir", dir .. "/", { resume = true, recursive = true })
    end)
    assert.is_true(ok, r)
    assert.are.equal(1, #said)
    assert.matches("is a directory: copied whole", said[1])
    assert.are.equal("x\n", H.readfile(dir .. "/sshchain-resume-dir/a/f"))
    assert.is_nil(r.resumed)
    s:exec("rm -rf /tmp/sshchain-resume-dir")
    s:close()
  end)

  it("retries never retry what is not the network's: a missing file fails once", function()
    local s = assert(sshchain.connect(chain(), { reconnect = true }))
    local n = 0
    local r, msg, code = s:download("/tmp/sshchain-no-such-file", "/tmp/", { resume = true, retries = 3,
      on_retry = function() n = n + 1 end })
    assert.is_nil(r)
    assert.are.equal("EIO", code, msg)
    assert.are.equal(0, n)
    s:close()
  end)

  it("sshlua -r copy --resume --retries: a kept partial is continued and said in the JSON row", function()
    local dir = fresh_dir()
    local s = assert(sshchain.connect(chain()))
    broken_download(s, dir, HALF)
    s:close()
    local kept = #H.readfile(dir .. "/.sshchain-resume.bin.sshchain-partial")
    local out = H.tmpname()
    local cmd = (". %s; %s/sshlua -r copy -i %s --resume --retries 2 --json -q t1:%s %s/ > %s 2>&1 < /dev/null")
      :format(sshchain.shell_quote(H.lab.inventory_env), H.build, sshchain.shell_quote(H.lab.inventory), REMOTE, dir, out)
    local _, _, rc = os.execute(cmd)
    local text = H.readfile(out) or ""
    os.remove(out)
    assert.are.equal(0, rc, text)
    local row = require("cjson").decode((assert(text:match("{[^\n]*}"), text)))
    assert.is_true(row.ok)
    assert.are.equal(kept, row.resumed)
    assert.are.equal(SIZE - kept, row.bytes)
    assert.are.equal(1, row.attempts)
    assert.are.equal(remote_sha, H.sh("sha256sum " .. dir .. "/sshchain-resume.bin"):match("^%x+"))
  end)

  it("sshlua -r copy --resume --retries 3 goes on through a killed hop, sending only the rest", function()
    local dir = fresh_dir()
    local partial = dir .. "/.sshchain-resume.bin.sshchain-partial"
    local killed
    local watcher = sshchain.spawn(function()
      for _ = 1, 2000 do
        local f = io.open(partial, "rb")
        local n = f and f:seek("end") or 0
        if f then f:close() end
        if n >= 2 * 1024 * 1024 then
          kill_j2()
          killed = n
          return
        end
        sshchain.sleep(0.002)
      end
    end)
    local out, rc = H.bg(sshchain, (". %s; %s/sshlua -r copy -i %s --resume --retries 3 --json -q t1:%s %s/ < /dev/null")
      :format(sshchain.shell_quote(H.lab.inventory_env), H.build, sshchain.shell_quote(H.lab.inventory), REMOTE, dir), 60)
    watcher:wait()
    assert.are.equal(0, rc, out)
    assert.is_truthy(killed, "the partial never grew: " .. out)
    local row = require("cjson").decode((assert(out:match("{[^\n]*}"), out)))
    assert.is_true(row.ok)
    assert.are.equal(2, row.attempts, out)
    assert.is_true(row.resumed >= killed // 2 and row.bytes < SIZE, out)
    assert.are.equal(SIZE, row.resumed + row.bytes)
    assert.are.equal(remote_sha, H.sh("sha256sum " .. dir .. "/sshchain-resume.bin"):match("^%x+"))
  end)
end)
