-- sshchain.transfer: uploads, downloads and server-to-server copies (Session:upload,
-- Session:download and sshchain.copy call these). The policy lives here (options, channel slots,
-- progress callbacks, SHA-256 verification against the remote side's sha256sum); the protocols
-- (SCP, SFTP) and the data path are in C (core/transfer.c).
--
-- verify: every file's digest is computed here as it streams. Before a file is kept, it is
-- compared with the remote source's (sha256sum of the whole source, run alongside the transfer)
-- and, for an SFTP destination, with its temporary file's: a mismatch keeps nothing under the
-- final name. An SCP destination writes in place (as scp does): it is checked afterwards.
--
-- resume: a file is written to its partial name (".NAME.sshchain-partial" beside the final one,
-- mode 0600 until complete), which a failed transfer keeps. The next transfer of the same file
-- finds it, compares its bytes with the source's first as many (SHA-256 of each: sha256sum over
-- an exec channel on a remote side), and sends only the rest; a partial that does not match is
-- discarded, said once, and the file starts again. Over SFTP (SCP has no offsets). retries: a
-- failure of the network is tried again (sshchain.retry), resuming where the last try stopped.
local core = require "sshchain.core"
local sched = require "sshchain.sched"
local errors = require "sshchain.errors"
local retry = require "sshchain.retry"
local settings = require("sshchain.jumps").settings

local XFER_OPTS = { recursive = "boolean", preserve = "boolean", progress = "function",
  verify = "boolean", protocol = { type = "string", values = { "scp", "sftp" } },
  timeout = { type = "number", min = 0, max = 1e9 }, resume = "boolean", retries = "any",
  on_retry = "function", progress_every = { type = "number", min = 0.001, max = 3600 } }

local DEFAULT_IDLE_TIMEOUT = 60 -- seconds without any progress before ETIMEDOUT

local M = {}

do
  local await = sched.await

  local function check_session(s, what, level)
    if type(s) ~= "table" or type(s._c) ~= "userdata" or not s._take_slot then
      error("bad argument to '" .. what .. "' (sshchain session expected)", level + 1)
    end
    if s._c:state() == "closed" then error("sshchain: session is closed", level + 1) end
  end

  local function check_opts(opts, what, level)
    return errors.check_options(opts, XFER_OPTS, what, level + 1)
  end

  --- A remote path for the remote shell, as the C side quotes it ("~/x" is relative to home).
  local function remote_quote(path)
    if path == "~" then path = "." end
    if path:sub(1, 2) == "~/" then
      path = path:sub(3):gsub("^/+", "")
      if path == "" then path = "." end
    end
    return "'" .. path:gsub("'", "'\\''") .. "'"
  end

  local function trim(path)
    local t = path:gsub("/+$", "")
    if t == "" then return "/" end
    return t
  end

  local function basename(path) return trim(path):match("([^/]*)$") end

  --- "<hex>  <name>" lines of sha256sum (names with \ or newline come escaped) -> {name=hex}
  local function parse_sums(out)
    local sums = {}
    for line in out:gmatch("[^\n]+") do
      local esc, hex, name = line:match("^(\\?)(%x+)  (.*)$")
      if hex then
        if esc == "\\" then name = name:gsub("\\(.)", { ["\\"] = "\\", n = "\n" }) end
        sums[name] = hex
      end
    end
    return sums
  end

  local function where(s, verb, reason)
    return { label = s:label(), hop = s._c:hop(), stage = verb, reason = reason }
  end

  --- SHA-256 of every file at root on session s (a file, or a directory walked as scp -r and the
  --- SFTP source walk it: symlinks followed), keyed like the transfer's file list: the first
  --- component is `top`, the name the transfer gives the root. A map, or nil, msg, CODE, err.
  local function remote_sums(s, verb, root, top)
    local q = remote_quote(root)
    local cmd = "if [ -d " .. q .. " ]; then echo D; cd -- " .. q ..
      " && find -L . -type f -exec sha256sum -- {} +; else echo F; sha256sum -- " .. q .. "; fi"
    local r, msg, code, info = s:exec(cmd, { timeout = 3600 })
    if not r then return nil, msg, code, info end
    if not r.ok then
      return errors.fail("EIO", where(s, verb, "verify"), "verify: sha256sum failed: %s",
        (r.stderr:gsub("%c", " ")))
    end
    local kind, rest = r.stdout:match("^([DF])\n(.*)$")
    local sums, keyed = parse_sums(rest or ""), {}
    if kind == "F" then
      local _, hex = next(sums)
      keyed[top] = hex
    else
      for name, hex in pairs(sums) do keyed[top .. name:gsub("^%./", "/")] = hex end
    end
    return keyed
  end

  --- The SHA-256 of one remote file on s, or nil and why.
  local function remote_sum(s, path)
    local r, msg = s:exec("sha256sum -- " .. remote_quote(path), { timeout = 3600 })
    if not r then return nil, msg end
    if not r.ok then return nil, "sha256sum failed: " .. (r.stderr:gsub("%c", " ")) end
    local hex = r.stdout:match("^\\?(%x+)  ")
    if not hex then return nil, "sha256sum said nothing usable" end
    return hex
  end

  --- Compares what streamed with an SCP destination's files, after the transfer (scp -t writes
  --- in place: this is the one check that comes after).
  local function verify_after(s, verb, root, files, top)
    local sums, msg, code, info = remote_sums(s, verb, root, top)
    if not sums then return nil, msg, code, info end
    for _, f in ipairs(files) do
      if sums[f.path] ~= f.sha256 then
        return errors.fail("EIO", where(s, verb, "verify"),
          "verify: SHA-256 of %s differs on the destination (SCP writes in place: it is there)", f.path)
      end
    end
    return true
  end

  --- Whether path is an existing directory on s (a scp sink puts the top entry inside it).
  local function remote_is_dir(s, path)
    local r = s:exec("if [ -d " .. remote_quote(path) .. " ]; then echo dir; fi", { timeout = 60 })
    return r and r.stdout:find("dir", 1, true) ~= nil
  end

  --- Bytes in the regular files under path on s (GNU find), or nil.
  local function remote_total(s, path)
    local r = s:exec("find -L " .. remote_quote(path) .. " -type f -printf '%s\\n' 2>/dev/null | awk '{s+=$1} END {print s+0}'",
      { timeout = 60 })
    local n = r and r.ok and tonumber(r.stdout:match("%d+"))
    return n and n > 0 and n or nil
  end

  --- A remote source named ".", "..", "~" or ending so has no name of its own to send (the
  --- server would send "." and be refused): the directory it means, or nil, msg, CODE, err.
  local function named_source(s, verb, path)
    local base = basename(path)
    if path ~= "~" and base ~= "." and base ~= ".." and base ~= "" then return path end
    local r, msg, code, info = s:exec("cd -- " .. remote_quote(path) .. " && pwd -P", { timeout = 60 })
    if not r then return nil, msg, code, info end
    local dir = r.ok and r.stdout:match("^(/[^\n]*)\n$")
    if not dir then
      return errors.fail("EIO", where(s, verb), "remote %s: %s", path, (r.stderr:gsub("%c", " ")))
    end
    if dir == "/" then return errors.fail("EIO", where(s, verb), "cannot copy / as a whole") end
    return dir
  end

  local function local_is_dir(path)
    local f = io.open(path .. "/.") -- a file's "/." is ENOTDIR
    if f then f:close() end
    return f ~= nil
  end

  local function dirname(path)
    local d = trim(path):match("^(.*)/[^/]*$")
    if d == nil then return "." end
    return d == "" and "/" or d
  end

  local function hex_of(out) return out:match("^\\?(%x+)  ") or out:match("^(%x+)") end

  --- Where the sink keeps the top file's partial: this machine's, as the local sink names it
  --- (the target directory and the source's name, or the target's own name): path, bytes in it.
  local function local_partial(dst_path, src_base)
    local dir, name = dst_path, src_base
    if not local_is_dir(dst_path) then dir, name = dirname(dst_path), basename(dst_path) end
    local path = (dir == "/" and "" or dir) .. "/" .. core.partial_name(name)
    local f = io.open(path, "rb")
    if not f then return path, 0 end
    local size = f:seek("end") or 0
    f:close()
    return path, size
  end

  --- The same on a remote sink (SFTP): path, bytes, their SHA-256 (a partial that is not a
  --- plain file of this user counts as none); or nil, msg, CODE, err.
  local function remote_partial(s, dst_path, src_base)
    local in_dir = trim(dst_path) .. "/" .. core.partial_name(src_base)
    local beside = dirname(dst_path) .. "/" .. core.partial_name(basename(dst_path))
    local r, msg, code, info = s:exec("if [ -d " .. remote_quote(dst_path) .. " ]; then p=" .. remote_quote(in_dir) ..
      "; else p=" .. remote_quote(beside) .. "; fi; printf '%s\\n' \"$p\"; " ..
      "if [ -f \"$p\" ] && [ ! -L \"$p\" ] && [ -O \"$p\" ]; then stat -c %s -- \"$p\" && sha256sum < \"$p\"; fi",
      { timeout = 3600 })
    if not r then return nil, msg, code, info end
    local path, size, hex = r.stdout:match("^([^\n]*)\n(%d+)\n(%x+)")
    if not path then return r.stdout:match("^([^\n]*)\n") or beside, 0 end
    return path, tonumber(size), hex
  end

  --- The source's size and the SHA-256 of its first n bytes (this machine's when s is nil);
  --- "dir" for a directory; or nil, msg, CODE, err.
  local function source_prefix(s, verb, path, n)
    if not s then
      if local_is_dir(path) then return "dir" end
      local f, ferr = io.open(path, "rb")
      if not f then return errors.fail("EIO", { stage = verb, reason = "resume" }, "local %s", ferr) end
      local size = f:seek("end")
      f:close()
      if n == 0 or n > size then return size end
      local hex, why = core.sha256_file(path, n)
      if not hex then return errors.fail("EIO", { stage = verb, reason = "resume" }, "local %s", why) end
      return size, hex
    end
    local q = remote_quote(path)
    local r, msg, code, info = s:exec("if [ -d " .. q .. " ]; then echo dir; else stat -L -c %s -- " .. q ..
      (n > 0 and (" && head -c " .. n .. " -- " .. q .. " | sha256sum") or "") .. "; fi", { timeout = 3600 })
    if not r then return nil, msg, code, info end
    if r.stdout:match("^dir\n") then return "dir" end
    local size, rest = r.stdout:match("^(%d+)\n(.*)$")
    if not r.ok or not size then
      return errors.fail("EIO", where(s, verb, "resume"), "remote %s: %s", path, (r.stderr:gsub("%c", " ")))
    end
    size = tonumber(size)
    if n == 0 or n > size then return size end
    return size, hex_of(rest)
  end

  --- Resume: how many bytes of the top file the sink keeps (0: it starts again; false: the
  --- source is a directory, copied whole), and true when a partial that did not match was
  --- removed (said once); or nil, msg, CODE, err (a question that could not be answered).
  local function resume_point(verb, src, src_path, dst, dst_path)
    local base = basename(src_path)
    local ppath, psize, phex
    if dst then
      local a, b, c, d = remote_partial(dst, dst_path, base)
      if not a then return nil, b, c, d end
      ppath, psize, phex = a, b, c
    else
      ppath, psize = local_partial(dst_path, base)
    end
    local size, shex, scode, sinfo = source_prefix(src, verb, src_path, psize)
    if not size then return nil, shex, scode, sinfo end
    if size == "dir" then return false end
    if psize == 0 then return 0 end
    if not dst then
      local hex, why = core.sha256_file(ppath)
      if not hex then return errors.fail("EIO", { stage = verb, reason = "resume" }, "local %s", why) end
      phex = hex
    end
    if psize <= size and shex and phex == shex then return psize end
    local why = psize > size and ("it holds %d bytes, the source %d"):format(psize, size)
      or ("its %d bytes are not the source's first"):format(psize)
    local warn = settings.on_warning
    if warn then warn(("%s: the partial %s does not match %s (%s): discarded, starting again"):format(
      verb, ppath, src_path, why)) end
    if dst then
      local r, msg, code, info = dst:exec("rm -f -- " .. remote_quote(ppath), { timeout = 60 })
      if not r then return nil, msg, code, info end
    else
      os.remove(ppath)
    end
    return 0, true
  end

  --- Answers the digests a verify waits for: the source's from the map computed alongside (the
  --- task `sums`), the destination's temporary file by sha256sum there.
  local function answer_verify(op, dst, sums)
    local path = op:verify_request(0)
    if path then
      local map, msg = sums:wait()
      local hex = map and map[path]
      op:verify_answer(0, hex, hex and nil or (msg or ("sha256sum on the source did not list " .. path)))
    end
    path = op:verify_request(1)
    if path then
      local hex, why = remote_sum(dst, path)
      op:verify_answer(1, hex, why)
    end
  end

  --- Runs one transfer op to its end, calling progress as news comes and answering verify
  --- requests; returns the op.
  local function drive(op, progress, dst, sums)
    local ok, err = pcall(function()
      repeat
        await(op, true)
        if op:take_news() then
          if sums or (dst and op:sink_verifies_first()) then answer_verify(op, dst, sums) end
          if progress and not op:done() then progress(op:progress()) end
        end
      until op:done()
    end)
    if not ok then
      op:cancel()
      error(err, 0)
    end
    if progress and op:result() then
      local done, total, _, files = op:progress()
      progress(done, total or done, "", files)
    end
    return op
  end

  --- The common path of upload, download and copy.
  local function transfer(verb, src, src_path, dst, dst_path, opts)
    local t0 = core.now()
    local remote_src, remote_dst = src, dst
    local slots = {}
    local function release()
      for i = #slots, 1, -1 do slots[i][1]:_give_slot(slots[i][2]) end
      slots = {}
    end
    local function take(s)
      local conn, msg, code, info = s:_take_slot(nil, verb)
      if not conn then return nil, msg, code, info end
      slots[#slots + 1] = { s, conn }
      return conn
    end
    -- questions for the remote sides first: they need channels of their own
    if remote_src then
      local p, msg, code, info = named_source(remote_src, verb, src_path)
      if not p then return nil, msg, code, info end
      src_path = p
    end
    local proto = opts.protocol or (opts.resume and "sftp" or "scp")
    local resume, offset, restarted = false, 0, nil
    if opts.resume then
      local off, discarded, rcode, rinfo = resume_point(verb, remote_src, src_path, remote_dst, dst_path)
      if off == nil then return nil, discarded, rcode, rinfo end
      if off then
        resume, offset, restarted = true, off, discarded or nil
      elseif settings.on_warning then
        settings.on_warning(("%s: %s is a directory: copied whole (resume continues single files)"):format(verb, src_path))
      end
    end
    local dst_root_known
    if opts.verify and remote_dst and proto == "scp" then
      local into = remote_is_dir(remote_dst, dst_path)
      dst_root_known = into and (trim(dst_path) .. "/" .. basename(src_path)) or dst_path
    end
    local total
    if opts.progress and remote_src and opts.recursive then total = remote_total(remote_src, src_path) end
    -- the source's digests, computed there while the data streams
    local sums
    if opts.verify and remote_src then
      sums = sched.spawn(remote_sums, remote_src, verb, src_path, basename(src_path))
    end
    local ends = {}
    for i, s in ipairs { remote_src or false, remote_dst or false } do
      if s then
        local conn, msg, code, info = take(s)
        if not conn then
          release()
          if sums then pcall(sums.wait, sums) end
          return nil, msg, code, info
        end
        ends[i] = conn.c
      end
    end
    local ok, op = pcall(core.transfer_start, {
      src = ends[1], src_path = src_path, dst = ends[2], dst_path = dst_path, protocol = proto,
      recursive = opts.recursive, preserve = opts.preserve, hash = opts.verify,
      verify = opts.verify, timeout = opts.timeout or DEFAULT_IDLE_TIMEOUT, total = total, verb = verb,
      resume = resume, offset = offset, progress_every = opts.progress_every,
    })
    if not ok then release() error(op, 3) end
    local dok, derr = pcall(drive, op, opts.progress, remote_dst, sums)
    release()
    if sums then pcall(sums.wait, sums) end -- never leave the task behind
    if not dok then error(derr, 0) end
    local r, msg, code, info = op:result()
    if not r then return nil, msg, code, info end
    local done, _, _, nfiles = op:progress()
    local result = { files = nfiles, bytes = done - offset, seconds = core.now() - t0 }
    if resume then result.resumed, result.restarted = offset, restarted end
    if opts.verify then
      local files = op:files()
      if #files > 0 and remote_dst and not op:sink_verifies_first() then
        local top = files[1].path:match("^[^/]*")
        local root = op:dest_root() or dst_root_known
        local vok, vmsg, vcode, vinfo = verify_after(remote_dst, verb, root, files, top)
        if not vok then return nil, vmsg, vcode, vinfo end
      end
      result.verified = #files
    end
    return true, result
  end

  --- Whether a remote source is a pattern: an unescaped *, ? or [ (a backslash makes the next
  --- character literal, as in scp).
  local function is_glob(path)
    return path:gsub("\\.", ""):find("[*?[]") ~= nil
  end

  --- The pattern as one word for the remote shell: every character quoted but the glob's own
  --- (* ? [ ], and ! or ^ opening a bracket expression), so nothing else is interpreted there.
  local function glob_word(path)
    if path:sub(1, 2) == "~/" then path = path:sub(3) end
    local out, lit, i, prev = {}, {}, 1, nil
    local function flush()
      if #lit > 0 then out[#out + 1] = "'" .. table.concat(lit):gsub("'", "'\\''") .. "'" end
      lit = {}
    end
    while i <= #path do
      local c = path:sub(i, i)
      if c == "\\" and i < #path then
        lit[#lit + 1] = path:sub(i + 1, i + 1)
        i = i + 1
        prev = nil
      elseif c == "*" or c == "?" or c == "[" or c == "]" or ((c == "!" or c == "^") and prev == "[") then
        flush()
        out[#out + 1] = c
        prev = c
      else
        lit[#lit + 1] = c
        prev = nil
      end
      i = i + 1
    end
    flush()
    return table.concat(out)
  end

  --- The remote paths a pattern names on s, expanded by the server's shell (as scp's are), in
  --- its order; or nil, msg, CODE, err (none: EIO, as scp's "No such file or directory").
  local function expand(s, verb, pattern, proto)
    if proto == "sftp" then -- no shell needed: the SFTP client lists and matches
      local fs, msg, code, info = s:sftp()
      if not fs then return nil, msg, code, info end
      local home = pattern:sub(1, 2) == "~/"
      local list, gmsg, gcode, ginfo = fs:glob(home and pattern:sub(3) or pattern)
      fs:close()
      if not list then return nil, gmsg, gcode, ginfo end
      if #list == 0 then
        return errors.fail("EIO", where(s, verb), "remote %s: no such file or directory (nothing matches)", pattern)
      end
      if home then for i, p in ipairs(list) do list[i] = "~/" .. p end end
      return list
    end
    if pattern:find("\n", 1, true) then
      return errors.fail("EIO", where(s, verb), "a remote path holding a newline is refused")
    end
    local r, msg, code, info = s:exec("for f in " .. glob_word(pattern) ..
      "; do if [ -e \"$f\" ] || [ -L \"$f\" ]; then printf '%s\\0' \"$f\"; fi; done", { timeout = 60 })
    if not r then return nil, msg, code, info end
    local list = {}
    for p in r.stdout:gmatch("([^%z]+)%z") do list[#list + 1] = p end
    if #list == 0 then
      return errors.fail("EIO", where(s, verb), "remote %s: no such file or directory (nothing matches)", pattern)
    end
    if pattern:sub(1, 2) == "~/" then -- the shell ran in the home directory: keep the paths so
      for i, p in ipairs(list) do list[i] = "~/" .. p end
    end
    return list
  end

  --- A transfer whose remote source may be a pattern: each match in turn into dst_path, which
  --- must then be a directory (as scp says, "not a directory"); the results summed.
  local function transfer_each(verb, src, src_path, dst, dst_path, opts, dst_is_dir)
    if not is_glob(src_path) then -- "\*" is a literal "*"
      return transfer(verb, src, (src_path:gsub("\\([*?[])", "%1")), dst, dst_path, opts)
    end
    local list, msg, code, info = expand(src, verb, src_path, opts.protocol)
    if not list then return nil, msg, code, info end
    if #list > 1 and not dst_is_dir() then
      return errors.fail("EIO", where(dst or src, verb), "%s: not a directory (%d files match %s)",
        dst_path, #list, src_path)
    end
    local sum = { files = 0, bytes = 0, seconds = 0 }
    local progress = opts.progress
    local o = setmetatable({}, { __index = opts })
    for _, path in ipairs(list) do
      if progress then
        local base = sum.bytes
        o.progress = function(done, _, name, files) progress(base + done, nil, name, files) end
      end
      local ok, r, rcode, rinfo = transfer(verb, src, path, dst, dst_path, o)
      if not ok then return nil, r, rcode, rinfo end
      sum.files, sum.bytes, sum.seconds = sum.files + r.files, sum.bytes + r.bytes, sum.seconds + r.seconds
      if r.verified then sum.verified = (sum.verified or 0) + r.verified end
      if r.resumed then sum.resumed = (sum.resumed or 0) + r.resumed end
      sum.restarted = sum.restarted or r.restarted
    end
    return true, sum
  end

  --- The options, checked (resume speaks SFTP), and the retries policy (nil: none).
  local function checked(opts, what, level)
    local o = check_opts(opts, what, level + 1)
    if o.resume and o.protocol == "scp" then
      error(what .. ": resume needs SFTP (SCP cannot start a file at an offset): leave protocol unset or \"sftp\"",
        level + 1)
    end
    return o, retry.policy(o.retries, what, level + 1)
  end

  --- fn() until it succeeds or fails for good: a failure of the network is tried again (with
  --- resume, from where it stopped) while every session can come back (a lost one only with
  --- reconnect); the result says how many attempts it took.
  local function with_retries(p, sessions, on_retry, fn)
    if not p then return fn() end
    local policy = setmetatable({ allow = function()
      for _, s in ipairs(sessions) do
        if s._c:state() ~= "ready" and not s._reconnect then return false end
      end
      return true
    end }, { __index = p })
    local ok, r, code, info, attempts = retry.run(policy, fn, on_retry)
    if ok then r.attempts = attempts end
    return ok, r, code, info
  end

  local function check_path(p, n, what, level)
    if type(p) ~= "string" or p == "" or p:find("\0", 1, true) then
      error("bad argument #" .. n .. " to '" .. what .. "' (non-empty path expected)", level + 1)
    end
  end

  --- upload(s, local, remote [, opts]) -> true, info | nil, msg, CODE, err
  function M.upload(s, lpath, rpath, opts, level)
    level = (level or 1) + 1
    check_session(s, "upload", level)
    check_path(lpath, 1, "upload", level)
    check_path(rpath, 2, "upload", level)
    local o, p = checked(opts, "upload", level)
    return with_retries(p, { s }, o.on_retry, function() return transfer("upload", nil, lpath, s, rpath, o) end)
  end

  --- download(s, remote, local [, opts]) -> true, info | nil, msg, CODE, err
  function M.download(s, rpath, lpath, opts, level)
    level = (level or 1) + 1
    check_session(s, "download", level)
    check_path(rpath, 1, "download", level)
    check_path(lpath, 2, "download", level)
    local o, p = checked(opts, "download", level)
    return with_retries(p, { s }, o.on_retry, function()
      return transfer_each("download", s, rpath, nil, lpath, o, function() return local_is_dir(lpath) end)
    end)
  end

  --- copy(src_session, src_path, dst_session, dst_path [, opts]): streams from one host to
  --- another through this process (no temporary file); both ends anywhere in the tree.
  function M.copy(src, src_path, dst, dst_path, opts, level)
    level = (level or 1) + 1
    check_session(src, "copy", level)
    check_path(src_path, 2, "copy", level)
    check_session(dst, "copy", level)
    check_path(dst_path, 4, "copy", level)
    local o, p = checked(opts, "copy", level)
    return with_retries(p, { src, dst }, o.on_retry, function()
      return transfer_each("copy", src, src_path, dst, dst_path, o, function() return remote_is_dir(dst, dst_path) end)
    end)
  end
end

return M
