-- report: the HTML report of a load run, from its stress --out samples file(s).
local cli = require "sshchain.cli"
local loadstats = require "sshchain.loadstats"

local R = { summary = "an HTML report with charts from stress --out samples files" }

local DESCRIPTION = [[
Writes the report stress --report writes (one self-contained HTML file: charts of logins/s and
commands/s, latency p50/p90/p99, concurrent sessions and failures by CODE over time, the summary
and the thresholds), from the samples file a run wrote with --out, or from the files of its
shards together.]]

local EPILOG = [[
Examples:
   sshlua -r report samples.jsonl                 (writes samples.html)
   sshlua -r report -o load.html --threshold 'p99<500' shard-*.jsonl

Exit status:
   0  the report is written (and every threshold passed)
   2  bad command line, or a file that cannot be read or is cut short
   99  written, and some threshold failed]]

local function parser()
  local p = cli.parser("report", DESCRIPTION, EPILOG)
  p:usage("Usage: sshlua -r report [options] FILE.jsonl...")
  p:argument("files", "Samples files from stress --out."):args("+"):argname("FILE")
  p:option("-o --output", "The HTML file (default: the first FILE with .html for .jsonl).", nil):argname("OUT")
  p:option("--threshold", "A pass/fail condition, as in stress (repeatable).")
    :count("*"):argname("EXPR")
  return p
end

function R.main(argv)
  local p = parser()
  local args, code = cli.parse(p, argv)
  if not args then return code end
  cli.need("cjson", "lua-cjson")
  local thresholds, terr = loadstats.thresholds(args.threshold)
  if not thresholds then
    io.stderr:write(p:get_usage(), "\n\nError: ", terr, "\n")
    return cli.USAGE
  end
  local fig, series, passed = loadstats.load(args.files, thresholds)
  if not fig then
    cli.eprintf("report: %s\n", series)
    return cli.USAGE
  end
  local out = args.output or (args.files[1]:gsub("%.jsonl?$", "") .. ".html")
  local ok, err = require("sshchain.report").write(out, fig, series)
  if not ok then
    cli.eprintf("report: %s: %s\n", out, tostring(err))
    return cli.USAGE
  end
  cli.eprintf("report: %s (%d samples files, %.1f s, %d commands)\n", out, #args.files, fig.duration_s, fig.commands)
  return passed and cli.OK or loadstats.THRESHOLDS_FAILED
end

return R
