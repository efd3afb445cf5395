-- merge: one result from the outputs of a sharded run (exec, copy, tree JSON lines; stress --out
-- samples, whose figures are made again from every sample, so percentiles are exact).
local cli = require "sshchain.cli"
local loadstats = require "sshchain.loadstats"

local R = { summary = "merge the JSON outputs of a sharded run (exec/copy/tree rows, stress samples)" }

local DESCRIPTION = [[
Merges the outputs of the shards of one run (--shard K/N, or a job array) into one result.

JSON lines from exec, copy or tree --json: the rows of every file, ordered by host (then as
they came), one JSON object per line; the exit status is 1 when some row is not ok. A host that
appears in two files is said (the shards overlapped), except the jump hosts of tree's rows, which
every shard probes: the first row of each is kept.

Samples files from stress --out: the figures of the whole run, made again from every sample of
every shard (percentiles exact, not averaged), as stress prints them (a table, or one JSON object
with --json), with --threshold and --report as in stress. Every file must be complete: a file cut
short (a killed run, a partial copy) is refused, naming its last line.]]

local EPILOG = [[
Examples:
   sshlua -r merge exec-*.jsonl > all.jsonl
   sshlua -r merge --json --threshold 'p99<500' --report load.html samples-*.jsonl

Exit status:
   0  merged: every row ok (rows), every threshold passed (samples)
   1  some row is not ok, or (samples, no threshold on failures) some login or command failed
   2  bad command line, or a file that cannot be read or is cut short
   99  some threshold failed]]

local function parser()
  local p = cli.parser("merge", DESCRIPTION, EPILOG)
  p:usage("Usage: sshlua -r merge [options] FILE...")
  p:argument("files", "The shards' outputs."):args("+"):argname("FILE")
  p:flag("-j --json", "Samples: the figures as one JSON object.")
  p:option("--threshold", "Samples: a pass/fail condition, as in stress (repeatable).")
    :count("*"):argname("EXPR")
  p:option("--report", "Samples: write an HTML report with charts to FILE.", nil):argname("FILE")
  return p
end

--- The first line of a file, decoded; nil and a message.
local function first_object(cjson, path)
  local f, err = io.open(path)
  if not f then return nil, err end
  local line = f:read("l")
  f:close()
  if not line then return nil, path .. ": empty file" end
  local ok, o = pcall(cjson.decode, line)
  if not ok or type(o) ~= "table" then return nil, path .. ": line 1: not a JSON object" end
  return o
end

local function merge_rows(cjson, files)
  local rows, where = {}, {}
  for _, path in ipairs(files) do
    local f, err = io.open(path)
    if not f then return nil, err end
    local n = 0
    for line in f:lines() do
      n = n + 1
      if line ~= "" then
        local ok, o = pcall(cjson.decode, line)
        if not ok or type(o) ~= "table" then
          f:close()
          return nil, ("%s: line %d: not a JSON object (the file is cut short?)"):format(path, n)
        end
        if type(o.host) ~= "string" then
          f:close()
          return nil, ("%s: line %d: a row without \"host\" (not exec, copy or tree --json output)"):format(path, n)
        end
        if o.kind == "run" or o.type == "summary" or o.type == "interval" then
          f:close()
          return nil, ("%s: line %d: stress output: merge its --out samples files instead"):format(path, n)
        end
        local tree_node = o.depth ~= nil -- tree rows: each shard probes the jump hosts above its hosts
        if not (tree_node and where[o.host]) then
          o._order = #rows + 1
          rows[#rows + 1] = o
          if where[o.host] and where[o.host] ~= path then
            cli.eprintf("merge: host %s is in %s and %s (the shards overlap)\n", o.host, where[o.host], path)
          end
          where[o.host] = where[o.host] or path
        end
      end
    end
    f:close()
  end
  table.sort(rows, function(a, b)
    if a.host ~= b.host then return a.host < b.host end
    return a._order < b._order
  end)
  local bad = 0
  for _, o in ipairs(rows) do
    o._order = nil
    if o.ok == false then bad = bad + 1 end
    io.stdout:write(cjson.encode(o), "\n")
  end
  cli.eprintf("merge: %d rows from %d files: %d ok, %d not\n", #rows, #files, #rows - bad, bad)
  return bad == 0 and cli.OK or cli.FAILED
end

function R.main(argv)
  local p = parser()
  local args, code = cli.parse(p, argv)
  if not args then return code end
  local cjson = cli.need("cjson", "lua-cjson")
  local thresholds, terr = loadstats.thresholds(args.threshold)
  if not thresholds then
    io.stderr:write(p:get_usage(), "\n\nError: ", terr, "\n")
    return cli.USAGE
  end
  local first, ferr = first_object(cjson, args.files[1])
  if not first then
    cli.eprintf("merge: %s\n", ferr)
    return cli.USAGE
  end
  if first.kind ~= "run" then
    if #thresholds > 0 or args.report then
      cli.eprintf("merge: --threshold and --report are for stress samples files; %s has rows\n", args.files[1])
      return cli.USAGE
    end
    local status, err = merge_rows(cjson, args.files)
    if not status then
      cli.eprintf("merge: %s\n", err)
      return cli.USAGE
    end
    return status
  end
  local fig, series = loadstats.load(args.files, thresholds)
  if not fig then
    cli.eprintf("merge: %s\n", series)
    return cli.USAGE
  end
  if args.json then cli.json_line(loadstats.json(fig)) else loadstats.print(fig) end
  if args.report then
    local ok, err = require("sshchain.report").write(args.report, fig, series)
    if not ok then
      cli.eprintf("merge: --report %s: %s\n", args.report, tostring(err))
      return cli.FAILED
    end
  end
  return loadstats.status(fig, thresholds)
end

return R
