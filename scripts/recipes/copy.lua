-- copy: copy files and directories to, from and between servers through their jump hosts.
local sshchain = require "sshchain"
local cli = require "sshchain.cli"
local retry = require "sshchain.retry"

local R = { summary = "copy files to, from and between servers (SCP or SFTP), with progress" }

local DESCRIPTION = [[
Copies each SRC to DST as scp does, through the jump hosts of the hosts involved. A remote path
is written HOST:PATH (HOST from the inventory; a colon before any slash makes it remote, so write
./a:b for a local file named a:b). Local to remote uploads, remote to local downloads, and
remote to remote streams from one server to the other through this machine, without a
temporary file. Downloads are written under a temporary name and renamed only when complete:
a failure never leaves half a file under the final name.

With --resume, a file is written under a private partial name (.NAME.sshchain-partial, mode
0600) that a failed copy keeps; the next copy of it checks the partial against the source's
first bytes (SHA-256 on both sides) and sends only the rest, or says the partial does not match
and starts again. Resuming speaks SFTP. --retries N tries a copy again when the network failed
it (a hop lost, a connect that timed out), resuming with --resume; never after EAUTH, EHOSTKEY
or a file the server refused.

With --to, every SRC goes to the path DST on each host --to selects (hosts, groups or patterns),
at most --limit at once: one file to a whole cluster.

On a terminal a progress bar shows bytes, rate and time left; the summary (and any failure,
per destination) goes to standard error.]]

local EPILOG = [[
Examples:
   sshlua -r copy -i /tmp/sshchain-lab/inventory.lua ./build.tgz t1:/tmp/
   sshlua -r copy -i inventory.lua -r --verify node1:/var/log/app ./logs/
   sshlua -r copy -i inventory.lua t1:/data/dump.sql t4:/backup/
   sshlua -r copy -i inventory.lua --to 'node*' -- ./fix.sh /usr/local/bin/
   sshlua -r copy -i inventory.lua --resume --retries 5 t1:/data/image.iso ./

Exit status:
   0  every copy completed (and verified, with --verify)
   1  some copy failed (each says why)
   2  bad command line or inventory
   130  interrupted (Ctrl-C): copies under way leave no partial file]]

local function parser()
  local p = cli.parser("copy", DESCRIPTION, EPILOG)
  p:usage("Usage: sshlua -r copy [options] SRC... DST\n       sshlua -r copy [options] --to HOST... -- SRC... DST")
  p:argument("paths", "Sources, then the destination."):args("2+"):argname("PATH")
  cli.connection_options(p)
  p:flag("-r --recursive", "Copy directories with their contents.")
  p:flag("-p --preserve", "Keep modes and times.")
  p:flag("--verify", "Compare SHA-256 digests with the remote side's sha256sum.")
  p:flag("--sftp", "Speak SFTP (for servers without an scp binary) instead of SCP.")
  p:flag("--resume", "Keep a failed copy's partial file and continue it next time (SFTP).")
  cli.retries_option(p)
  p:option("--to", "Copy to PATH on each of these hosts.", nil):args("+"):count("*"):argname("HOST")
  p:option("-l --limit", "Copies at once (with --to).", "16", tonumber):argname("N")
  cli.shard_option(p, "--to hosts")
  p:flag("-j --json", "One JSON object per copy.")
  p:flag("-q --quiet", "No progress bar and no summary (failures are still shown).")
  return p
end

--- "host:path" -> host, path; a local path -> nil, path (scp's rule: a colon before any slash;
--- [v6addr]:path and user@[v6addr]:path too).
local function split_remote(s)
  local host, path = s:match("^([^/:@%[]*@?%[[^%]/]+%]):(.*)$")
  if not host then host, path = s:match("^([^/:%[]+):(.*)$") end
  if host then return host, path ~= "" and path or "." end
  return nil, s
end

function R.main(argv)
  local p = parser()
  local args, code = cli.parse(p, argv)
  if not args then return code end
  local inv, err = cli.open_inventory(args)
  if not inv then
    cli.eprintf("copy: %s\n", err)
    return cli.USAGE
  end
  local function usage(msg)
    io.stderr:write(p:get_usage(), "\n\nError: ", msg, "\n")
    return cli.USAGE
  end
  local paths = args.paths
  local dst_path = table.remove(paths)
  local jobs = {}
  local function host_chain(name)
    local names = inv:select { name }
    if not names or #names ~= 1 or names[1] ~= name then
      return nil, ("no host %q in %s"):format(name, tostring(inv.path))
    end
    return cli.chain(inv, name, args)
  end
  if #args.to > 0 then
    local selectors = {}
    for _, list in ipairs(args.to) do for _, h in ipairs(list) do selectors[#selectors + 1] = h end end
    local names, serr = inv:select(selectors)
    if not names then return usage(serr) end
    local shard_k, shard_n = cli.shard_or_usage("copy", args, args.quiet)
    if shard_k == false then return cli.USAGE end
    names = cli.take_shard(names, shard_k, shard_n)
    if split_remote(dst_path) then return usage("with --to, DST is a path on each host (no HOST:)") end
    for _, n in ipairs(names) do
      for _, src in ipairs(paths) do
        local sh, sp = split_remote(src)
        jobs[#jobs + 1] = { src_host = sh, src = sp, dst_host = n, dst = dst_path }
      end
    end
  else
    if args.shard then return usage("--shard splits the hosts of --to") end
    local dh, dp = split_remote(dst_path)
    if #paths > 1 and not dh and not os.execute("test -d " .. sshchain.shell_quote(dp)) then
      return usage(dst_path .. " is not a directory (several sources)")
    end
    for _, src in ipairs(paths) do
      local sh, sp = split_remote(src)
      if not sh and not dh then return usage("both ends are local (" .. src .. " -> " .. dst_path .. "): use cp") end
      jobs[#jobs + 1] = { src_host = sh, src = sp, dst_host = dh, dst = dp }
    end
  end
  local policy, perr = cli.retry_policy(args)
  if perr then return usage(perr) end
  local several = #paths > 1 -- then DST must be a directory, as scp requires
  -- chains first: any prompted secret is asked before transfers start
  for _, j in ipairs(jobs) do
    for _, side in ipairs { "src_host", "dst_host" } do
      if j[side] then
        local chain, cerr = host_chain(j[side])
        if not chain then return usage(cerr) end
        j[side .. "_chain"] = chain
      end
    end
    j.label = (j.src_host and (j.src_host .. ":") or "") .. j.src .. " -> " ..
      (j.dst_host and (j.dst_host .. ":") or "") .. j.dst
  end

  local progress = cli.progress(args.quiet or (args.json and not cli.isatty(2)))
  local t0 = sshchain.core.now()
  local sessions, jobs_left = sshchain.jumps.once(), {}
  for _, j in ipairs(jobs) do
    for _, h in ipairs { j.src_host or false, j.dst_host or false } do
      if h then jobs_left[h] = (jobs_left[h] or 0) + 1 end
    end
  end
  --- The session to a host, shared by its copies (one connect even when several ask at once).
  local function session(name, chain)
    local s, msg, ecode, info = sessions:get(name, function()
      return sshchain.connect(chain, policy and { reconnect = { max_wait = 30 } } or nil)
    end)
    if not s then sessions:drop(name) end -- a connect that failed is tried afresh next time
    return s, msg, ecode, info
  end
  --- A copy is over: a host whose copies are all over is logged out of.
  local function release(host)
    if not host then return end
    jobs_left[host] = jobs_left[host] - 1
    if jobs_left[host] == 0 then sessions:drop(host) end
  end
  local dir_checked = {}
  --- With several sources, DST must be a directory on the host (scp's rule).
  local function check_dir(host, s, path)
    if not several or dir_checked[host] ~= nil then return dir_checked[host] ~= false end
    local r = s:exec("test -d " .. sshchain.shell_quote(path))
    dir_checked[host] = r and r.ok or false
    return dir_checked[host]
  end
  local done_by, total_by, current = {}, {}, ""
  local function show(force)
    local done, total, known = 0, 0, true
    for i = 1, #jobs do
      done = done + (done_by[i] or 0)
      if total_by[i] then total = total + total_by[i] else known = false end
    end
    local label = #jobs == 1 and current or ("%d copies"):format(#jobs)
    progress:bytes(done, known and total or nil, label, force)
  end
  local opts_base = { recursive = args.recursive, preserve = args.preserve, verify = args.verify,
    protocol = (args.sftp or args.resume) and "sftp" or "scp", resume = args.resume or nil }
  local function run(j, i)
    local opts = {}
    for k, v in pairs(opts_base) do opts[k] = v end
    opts.progress = function(done, total, name)
      done_by[i], total_by[i] = done, total
      if name and name ~= "" then current = name end
      show()
    end
    local src_s, dst_s, msg, ecode, info
    if j.src_host then
      src_s, msg, ecode, info = session(j.src_host, j.src_host_chain)
      if not src_s then return nil, msg, ecode, info end
    end
    if j.dst_host then
      dst_s, msg, ecode, info = session(j.dst_host, j.dst_host_chain)
      if not dst_s then return nil, msg, ecode, info end
      if not check_dir(j.dst_host, dst_s, j.dst) then
        return nil, ("EIO: %s: %s is not a directory (several sources)"):format(dst_s:label(), j.dst), "EIO"
      end
    end
    if src_s and dst_s then
      return sshchain.copy(src_s, j.src, dst_s, j.dst, opts)
    elseif dst_s then
      return dst_s:upload(j.src, j.dst, opts)
    else
      return src_s:download(j.src, j.dst, opts)
    end
  end
  local limit = #args.to > 0 and math.max(1, args.limit) or 1 -- plain SRC... DST: one after another
  local ok_n, bytes, files, verified, resumed = 0, 0, 0, 0, 0
  local ran, results = pcall(sshchain.parallel, jobs, function(j, i)
    local c0 = sshchain.core.now()
    local ok, info, ecode, _, attempts = retry.run(policy, function() return run(j, i) end,
      function(n, m, _, _, wait)
        if args.quiet then return end
        progress:finish()
        cli.eprintf("copy: %s: attempt %d of %d failed (%s); again in %.1f s%s\n", j.label, n, policy.count + 1,
          cli.clean(m), wait, args.resume and ", resuming" or "")
      end)
    j.seconds, j.attempts = sshchain.core.now() - c0, policy and attempts or nil
    release(j.src_host)
    release(j.dst_host)
    if ok then
      done_by[i], total_by[i] = info.bytes, info.bytes
      return info
    end
    return nil, info, ecode
  end, { limit = limit })
  if not ran then
    progress:finish()
    sessions:close_all() -- transfers under way were canceled: their temporary files are gone
    if not sshchain.is_interrupted(results) then error(results, 0) end
    cli.eprintf("copy: interrupted\n")
    return 130
  end
  progress:finish()
  for i, r in ipairs(results) do
    local j = jobs[i]
    if r.ok then
      ok_n = ok_n + 1
      bytes, files = bytes + r.value.bytes, files + r.value.files
      verified = verified + (r.value.verified or 0)
      resumed = resumed + (r.value.resumed or 0)
    else
      cli.eprintf("copy: %s: %s\n", j.label, cli.clean(r.err))
    end
    if args.json then
      local host = j.dst_host or j.src_host -- the remote end (the destination between two servers)
      local chain = host == j.dst_host and j.dst_host_chain or j.src_host_chain
      cli.json_line(cli.row({ host = host, src = j.src, src_host = j.src_host, dst = j.dst, dst_host = j.dst_host,
        ok = r.ok, bytes = r.ok and r.value.bytes or nil, files = r.ok and r.value.files or nil,
        seconds = r.ok and r.value.seconds or j.seconds, verified = r.ok and r.value.verified or nil,
        resumed = r.ok and r.value.resumed or nil, attempts = j.attempts,
        error = not r.ok and r.err or nil, code = not r.ok and r.code or nil }, chain and chain[#chain]))
    end
  end
  sessions:close_all()
  if not args.quiet then
    local secs = sshchain.core.now() - t0
    io.stdout:flush()
    cli.eprintf("copy: %d of %d copies done: %d files, %s in %.2f s (%s/s)%s%s\n", ok_n, #jobs, files,
      cli.bytes(bytes), secs, cli.bytes(bytes / math.max(secs, 1e-3)),
      resumed > 0 and ("; " .. cli.bytes(resumed) .. " kept from before (resumed)") or "",
      args.verify and ("; " .. verified .. " files verified (SHA-256)") or "")
  end
  return ok_n == #jobs and cli.OK or cli.FAILED
end

return R
