-- sshchain.transfer: s:upload, s:download and sshchain.copy. The policy lives here (options,
-- channel slots, progress callbacks, SHA-256 verification against the remote side's
-- sha256sum); the protocols (SCP, SFTP) and the data path are in C (core/transfer.c).
local core = require "sshchain.core"
local sched = require "sshchain.sched"

local XFER_OPTS = { recursive = "boolean", preserve = "boolean", progress = "function",
  verify = "boolean", protocol = "string", timeout = "number" }

local DEFAULT_IDLE_TIMEOUT = 60 -- seconds without any progress before ETIMEDOUT

return function(M)
  local Session = M.Session
  local await = sched.await

  local function check_session(s, what, level)
    if getmetatable(s) ~= Session then
      error("bad argument to '" .. what .. "' (sshchain session expected)", level + 1)
    end
    if s._c:state() == "closed" then error("sshchain: session is closed", level + 1) end
  end

  local function check_opts(opts, what, level)
    if opts == nil then return {} end
    if type(opts) ~= "table" then error("bad options to '" .. what .. "' (table expected)", level + 1) end
    for k, v in pairs(opts) do
      if not XFER_OPTS[k] then error(what .. ": unknown option '" .. tostring(k) .. "'", level + 1) end
      if type(v) ~= XFER_OPTS[k] then error(what .. ": option '" .. k .. "' must be a " .. XFER_OPTS[k], level + 1) end
    end
    if opts.protocol and opts.protocol ~= "scp" and opts.protocol ~= "sftp" then
      error(what .. ": protocol must be \"scp\" or \"sftp\"", level + 1)
    end
    return opts
  end

  local function check_path(p, n, what, level)
    if type(p) ~= "string" or p == "" then
      error("bad argument #" .. n .. " to '" .. what .. "' (non-empty path expected)", level + 1)
    end
  end

  --- A remote path for the remote shell, as the C side quotes it ("~/x" is relative to home).
  local function remote_quote(path)
    if path == "~" then path = "." end
    if path:sub(1, 2) == "~/" then
      path = path:sub(3):gsub("^/+", "")
      if path == "" then path = "." end
    end
    return M.shell_quote(path)
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

  --- SHA-256 of every file under root on session s, keyed like the transfer's file list (the first
  --- component is `top`, the name the transfer gave the root).
  local function remote_sums(s, root, files, top)
    local single = #files == 1 and files[1].path == top
    local cmd
    if single then
      cmd = "sha256sum -- " .. remote_quote(root)
    else
      -- -L: symlinks are followed, as scp -r and the SFTP source follow them
      cmd = "cd -- " .. remote_quote(root) .. " && find -L . -type f -exec sha256sum -- {} +"
    end
    local r, msg, code = s:exec(cmd, { timeout = 3600 })
    if not r then return nil, msg, code end
    if not r.ok then
      return nil, "EIO: " .. s:label() .. ": verify: sha256sum failed: " .. (r.stderr:gsub("%c", " ")), "EIO"
    end
    local sums, keyed = parse_sums(r.stdout), {}
    if single then
      local _, hex = next(sums)
      keyed[top] = hex
    else
      for name, hex in pairs(sums) do keyed[top .. name:gsub("^%./", "/")] = hex end
    end
    return keyed
  end

  local function mismatch(s, verb, side, path)
    return nil, ("EIO: %s: %s: verify: SHA-256 of %s differs on %s"):format(s:label(), verb, path, side), "EIO"
  end

  --- Compares the digests of what streamed with the remote side's.
  local function verify_remote(s, verb, root, files, top, side)
    local sums, msg, code = remote_sums(s, root, files, top)
    if not sums then return nil, msg, code end
    for _, f in ipairs(files) do
      if sums[f.path] ~= f.sha256 then return mismatch(s, verb, side, f.path) end
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
  --- server would send "." and be refused): the directory it means, or nil, msg, CODE.
  local function named_source(s, verb, path)
    local base = basename(path)
    if path ~= "~" and base ~= "." and base ~= ".." and base ~= "" then return path end
    local r, msg, code = s:exec("cd -- " .. remote_quote(path) .. " && pwd -P", { timeout = 60 })
    if not r then return nil, msg, code end
    local dir = r.ok and r.stdout:match("^(/[^\n]*)\n$")
    if not dir then
      return nil, ("EIO: %s: %s: remote %s: %s"):format(s:label(), verb, path, (r.stderr:gsub("%c", " "))), "EIO"
    end
    if dir == "/" then return nil, ("EIO: %s: %s: cannot copy / as a whole"):format(s:label(), verb), "EIO" end
    return dir
  end

  --- Runs one transfer op to its end, calling progress as news comes; returns the op.
  local function drive(op, progress)
    local ok, err = pcall(function()
      repeat
        await(op, true)
        if op:take_news() and progress and not op:done() then progress(op:progress()) end
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
      local conn, msg, code = s:_take_slot()
      if not conn then return nil, msg, code end
      slots[#slots + 1] = { s, conn }
      return conn
    end
    -- questions for the remote sides first: they need channels of their own
    if remote_src then
      local p, msg, code = named_source(remote_src, verb, src_path)
      if not p then return nil, msg, code end
      src_path = p
    end
    local proto = opts.protocol or "scp"
    local dst_root_known
    if opts.verify and remote_dst and proto == "scp" then
      local into = remote_is_dir(remote_dst, dst_path)
      dst_root_known = into and (trim(dst_path) .. "/" .. basename(src_path)) or dst_path
    end
    local total
    if opts.progress and remote_src and opts.recursive then total = remote_total(remote_src, src_path) end
    local ends = {}
    for i, s in ipairs { remote_src or false, remote_dst or false } do
      if s then
        local conn, msg, code = take(s)
        if not conn then release() return nil, msg, code end
        ends[i] = conn.c
      end
    end
    local ok, op = pcall(core.transfer_start, {
      src = ends[1], src_path = src_path, dst = ends[2], dst_path = dst_path, protocol = proto,
      recursive = opts.recursive, preserve = opts.preserve, hash = opts.verify,
      timeout = opts.timeout or DEFAULT_IDLE_TIMEOUT, total = total, verb = verb,
    })
    if not ok then release() error(op, 3) end
    local dok, derr = pcall(drive, op, opts.progress)
    release()
    if not dok then error(derr, 0) end
    local r, msg, code = op:result()
    if not r then return nil, msg, code end
    local done, _, _, nfiles = op:progress()
    local info = { files = nfiles, bytes = done, seconds = core.now() - t0 }
    if opts.verify then
      local files = op:files()
      if #files > 0 then
        local top = files[1].path:match("^[^/]*")
        if remote_src then
          local vok, vmsg, vcode = verify_remote(remote_src, verb, src_path, files, top, "the source")
          if not vok then return nil, vmsg, vcode end
        end
        if remote_dst then
          local root = op:dest_root() or dst_root_known
          local vok, vmsg, vcode = verify_remote(remote_dst, verb, root, files, top, "the destination")
          if not vok then return nil, vmsg, vcode end
        end
        info.verified = #files
      else
        info.verified = 0
      end
    end
    return true, info
  end

  --- s:upload(local, remote [, opts]) -> true, info | nil, msg, CODE
  function Session:upload(lpath, rpath, opts)
    check_session(self, "upload", 2)
    check_path(lpath, 1, "upload", 2)
    check_path(rpath, 2, "upload", 2)
    return transfer("upload", nil, lpath, self, rpath, check_opts(opts, "upload", 2))
  end

  --- s:download(remote, local [, opts]) -> true, info | nil, msg, CODE
  function Session:download(rpath, lpath, opts)
    check_session(self, "download", 2)
    check_path(rpath, 1, "download", 2)
    check_path(lpath, 2, "download", 2)
    return transfer("download", self, rpath, nil, lpath, check_opts(opts, "download", 2))
  end

  --- sshchain.copy(src_session, src_path, dst_session, dst_path [, opts]): streams from one host
  --- to another through this process (no temporary file); both ends anywhere in the tree.
  function M.copy(src, src_path, dst, dst_path, opts)
    check_session(src, "copy", 2)
    check_path(src_path, 2, "copy", 2)
    check_session(dst, "copy", 2)
    check_path(dst_path, 4, "copy", 2)
    return transfer("copy", src, src_path, dst, dst_path, check_opts(opts, "copy", 2))
  end
end
