-- sshchain.loadstats: the figures of a load run, made from its samples (one per login, command or
-- logout), the same way whether the samples come live from the stress recipe or later from the
-- --out files of one run or of several shards (sshlua -r merge, sshlua -r report). Latencies are
-- kept to 0.1 ms (the figures' precision) in histograms, so percentiles are exact and memory
-- does not grow with the run's length; the time series has at most MAX_BUCKETS buckets (their
-- width doubles as the run goes on).
local M = {}

M.MAX_BUCKETS = 512

-- The network classes of failure (a session that had one is logged in again in timed runs).
M.LOST = { ECLOSED = true, ECONNECT = true, EIO = true, ECHANNEL = true }

---------------------------------------------------------------------------------------------------
-- Histograms of latencies in tenths of a millisecond: {counts = {[tenths] = n}, n = total}

local function hist() return { counts = {}, n = 0 } end

local function hist_add(h, k, times)
  times = times or 1
  h.counts[k] = (h.counts[k] or 0) + times
  h.n = h.n + times
end

local function hist_merge(dst, src)
  for k, c in pairs(src.counts) do hist_add(dst, k, c) end
end

--- The nearest-rank percentiles ps (list of 0..100; 100 is the maximum) of h, in ms, or nils.
local function hist_pcts(h, ps)
  local out = {}
  if h.n == 0 then return out end
  local keys = {}
  for k in pairs(h.counts) do keys[#keys + 1] = k end
  table.sort(keys)
  for i, p in ipairs(ps) do
    local rank = math.min(h.n, math.max(1, math.ceil(p / 100 * h.n)))
    local seen = 0
    for _, k in ipairs(keys) do
      seen = seen + h.counts[k]
      if seen >= rank then
        out[i] = k / 10
        break
      end
    end
  end
  return out
end
M.hist_pcts = hist_pcts

--- A latency in seconds -> tenths of a millisecond (an integer).
function M.tenths(seconds) return math.floor(seconds * 10000 + 0.5) end

--- A time in seconds, to the microsecond (what the --out file holds, exactly).
function M.usec(t) return math.floor(t * 1e6 + 0.5) / 1e6 end

---------------------------------------------------------------------------------------------------
-- The accumulator

local Stats = {}
Stats.__index = Stats

--- A new accumulator. meta: the run's description (target, hosts, users, mode, shard, repeat).
function M.new(meta)
  return setmetatable({
    meta = meta or {},
    login_hist = hist(), cmd_hist = hist(),
    sessions = 0, sessions_failed = 0, live = 0, peak = 0, last_login = nil,
    commands = 0, commands_ok = 0, commands_canceled = 0, logouts = 0,
    failures = 0, by_code = {}, examples = {},
    width = 1, buckets = {}, last_time = 0,
    iv = nil,
  }, Stats)
end

local function bucket_new() return { logins = 0, logins_failed = 0, commands = 0, commands_failed = 0,
  hist = hist(), peak = 0, codes = {} } end

--- Halves the number of buckets: each pair becomes one of twice the width.
function Stats:_coarsen()
  local old, new = self.buckets, {}
  for i = 1, #old, 2 do
    local a, b = old[i], old[i + 1]
    if b then
      a.logins, a.logins_failed = a.logins + b.logins, a.logins_failed + b.logins_failed
      a.commands, a.commands_failed = a.commands + b.commands, a.commands_failed + b.commands_failed
      hist_merge(a.hist, b.hist)
      a.peak = math.max(a.peak, b.peak)
      for c, n in pairs(b.codes) do a.codes[c] = (a.codes[c] or 0) + n end
    end
    new[#new + 1] = a
  end
  self.buckets, self.width = new, self.width * 2
end

function Stats:_bucket(t)
  local i = math.floor(t / self.width) + 1
  while i > M.MAX_BUCKETS do
    self:_coarsen()
    i = math.floor(t / self.width) + 1
  end
  for j = #self.buckets + 1, i do
    local b = bucket_new()
    b.peak = self.live -- a bucket with no event still has the sessions open
    self.buckets[j] = b
  end
  return self.buckets[math.max(i, 1)]
end

local function fail(self, s, b)
  self.failures = self.failures + 1
  self.by_code[s.code] = (self.by_code[s.code] or 0) + 1
  if not self.examples[s.code] then
    self.examples[s.code] = s.host .. ": " .. (type(s.error) == "string" and s.error or s.code)
  end
  b.codes[s.code] = (b.codes[s.code] or 0) + 1
  if self.iv then self.iv.failures = self.iv.failures + 1 end
end

--- Adds a sample {time = seconds since the start, user, host, kind = "login"|"command"|"logout",
--- latency_ms, code = "OK" or a CODE, error}. Samples come in time order.
function Stats:add(s)
  local t = s.time
  if t > self.last_time then self.last_time = t end
  local b = self:_bucket(t)
  local k = math.floor(s.latency_ms * 10 + 0.5)
  local iv = self.iv
  if s.kind == "login" then
    if s.code == "OK" then
      self.sessions = self.sessions + 1
      self.live = self.live + 1
      if self.live > self.peak then self.peak = self.live end
      if self.live > b.peak then b.peak = self.live end
      self.last_login = t
      hist_add(self.login_hist, k)
      b.logins = b.logins + 1
      if iv then
        iv.logins = iv.logins + 1
        if self.live > iv.peak then iv.peak = self.live end
      end
    else
      self.sessions_failed = self.sessions_failed + 1
      b.logins_failed = b.logins_failed + 1
      if iv then iv.logins_failed = iv.logins_failed + 1 end
      fail(self, s, b)
    end
  elseif s.kind == "command" then
    if s.code == "ECANCELED" then -- cut off at the end of a timed run: not a result
      self.commands_canceled = self.commands_canceled + 1
      return
    end
    self.commands = self.commands + 1
    b.commands = b.commands + 1
    if iv then iv.commands = iv.commands + 1 end
    if s.code == "OK" then
      self.commands_ok = self.commands_ok + 1
      hist_add(self.cmd_hist, k)
      hist_add(b.hist, k)
      if iv then hist_add(iv.hist, k) end
    else
      b.commands_failed = b.commands_failed + 1
      fail(self, s, b)
    end
  elseif s.kind == "logout" then
    self.logouts = self.logouts + 1
    self.live = self.live - 1
  else
    error(("unknown sample kind %q"):format(tostring(s.kind)), 0)
  end
end

local function r1(v) return v and math.floor(v * 10 + 0.5) / 10 end
local function r2(v) return v and math.floor(v * 100 + 0.5) / 100 end

--- Starts an interval (the --every lines).
function Stats:interval_start(t)
  self.iv = { t0 = t, logins = 0, logins_failed = 0, commands = 0, failures = 0, hist = hist(), peak = self.live }
end

--- The figures of the interval that ends at t (and starts the next one).
function Stats:interval_end(t, users)
  local iv = self.iv
  local span = math.max(t - iv.t0, 1e-3)
  local p = hist_pcts(iv.hist, { 50, 99 })
  local line = { type = "interval", time_s = r2(t), interval_s = r2(span), users = users or 0,
    sessions = self.live, peak_sessions = iv.peak, logins_per_s = r1(iv.logins / span),
    commands_per_s = r1(iv.commands / span), p50_ms = p[1], p99_ms = p[2], failures = iv.failures }
  self:interval_start(t)
  return line
end

-- The figures' keys in a fixed order (every run has each of them; nil ones are JSON null).
M.KEYS = { "type", "target", "hosts", "users", "repeat", "mode", "shard", "sessions", "sessions_failed",
  "peak_sessions", "logins_per_s", "logins_p50_ms", "logins_p90_ms", "logins_p99_ms", "logins_max_ms",
  "commands", "commands_ok", "commands_failed", "commands_canceled", "commands_per_s", "p50_ms", "p90_ms",
  "p99_ms", "max_ms", "failures", "failures_pct", "failures_by_code", "failure_examples", "duration_s",
  "interrupted", "thresholds", "thresholds_ok" }

--- The run's figures (duration: its length in seconds).
function Stats:figures(duration, interrupted)
  local m = self.meta
  local lp = hist_pcts(self.login_hist, { 50, 90, 99, 100 })
  local cp = hist_pcts(self.cmd_hist, { 50, 90, 99, 100 })
  local attempts = self.sessions + self.sessions_failed + self.commands
  local login_span = math.max(self.last_login or 0, 1e-3)
  return {
    type = "summary", target = m.target, hosts = m.hosts, users = m.users, ["repeat"] = m["repeat"],
    mode = m.mode, shard = m.shard,
    sessions = self.sessions, sessions_failed = self.sessions_failed, peak_sessions = self.peak,
    logins_per_s = r1(self.sessions / login_span),
    logins_p50_ms = lp[1], logins_p90_ms = lp[2], logins_p99_ms = lp[3], logins_max_ms = lp[4],
    commands = self.commands, commands_ok = self.commands_ok, commands_failed = self.commands - self.commands_ok,
    commands_canceled = self.commands_canceled,
    commands_per_s = r1(self.commands / math.max(duration, 1e-3)),
    p50_ms = cp[1], p90_ms = cp[2], p99_ms = cp[3], max_ms = cp[4],
    failures = self.failures, failures_pct = attempts > 0 and r2(self.failures / attempts * 100) or 0,
    failures_by_code = self.by_code, failure_examples = self.examples,
    duration_s = r2(duration), interrupted = interrupted and true or false,
    thresholds = {}, thresholds_ok = true,
  }
end

--- The time series for charts: {width = seconds per bucket, buckets = {{t=, logins_per_s=,
--- logins_failed_per_s=, commands_per_s=, p50_ms=, p90_ms=, p99_ms=, sessions=, failures={CODE=per_s}}}}
--- duration: the run's length (the last bucket's rates are over the part of it the run covered).
function Stats:series(duration)
  local out = {}
  local w = self.width
  for i, b in ipairs(self.buckets) do
    local p = hist_pcts(b.hist, { 50, 90, 99 })
    local t = (i - 1) * w
    local span = math.max(math.min(w, (duration or math.huge) - t), math.min(w, 0.1))
    local f = {}
    for c, n in pairs(b.codes) do f[c] = n / span end
    out[i] = { t = t, span = span, logins_per_s = b.logins / span, logins_failed_per_s = b.logins_failed / span,
      commands_per_s = b.commands / span, p50_ms = p[1], p90_ms = p[2], p99_ms = p[3], sessions = b.peak,
      failures = f }
  end
  return { width = w, buckets = out }
end

---------------------------------------------------------------------------------------------------
-- Thresholds: METRIC OP NUMBER[%], METRIC a numeric figure with or without its unit suffix
-- (p99 is p99_ms, duration is duration_s); failures<1% is failures_pct < 1.

local NUMERIC = {}
for _, k in ipairs(M.KEYS) do
  if not ({ type = 1, target = 1, mode = 1, shard = 1, failures_by_code = 1, failure_examples = 1,
    interrupted = 1, thresholds = 1, thresholds_ok = 1 })[k] then NUMERIC[k] = true end
end
local OPS = {
  ["<"] = function(a, b) return a < b end, ["<="] = function(a, b) return a <= b end,
  [">"] = function(a, b) return a > b end, [">="] = function(a, b) return a >= b end,
  ["=="] = function(a, b) return a == b end, ["!="] = function(a, b) return a ~= b end,
}

local function metric_names()
  local l = {}
  for k in pairs(NUMERIC) do if k ~= "repeat" then l[#l + 1] = k end end
  table.sort(l)
  return table.concat(l, ", ")
end

--- Parses a threshold; returns {expr=, key=, op=, value=} or nil and a message naming it.
function M.threshold(expr)
  local name, op, num, pct = tostring(expr):match("^%s*([%a_][%w_]*)%s*([<>=!]=?)%s*([%d.]+)%s*(%%?)%s*$")
  local value = num and tonumber(num)
  if not name or not OPS[op] or not value then
    return nil, ("bad threshold %q: write METRIC OP NUMBER, e.g. p99<500, failures<1%%, commands_per_s>100"):format(expr)
  end
  local key
  if pct == "%" then
    if name ~= "failures" then return nil, ("bad threshold %q: only failures takes a %%"):format(expr) end
    key = "failures_pct"
  else
    for _, k in ipairs { name, name .. "_ms", name .. "_s" } do
      if NUMERIC[k] then
        key = k
        break
      end
    end
  end
  if not key then
    return nil, ("bad threshold %q: no metric %q (metrics, the unit suffix _ms or _s optional: %s)"):format(expr, name, metric_names())
  end
  return { expr = expr, key = key, op = op, value = value }
end

--- Parses a list of threshold expressions: the list, or nil and the first one's message.
function M.thresholds(exprs)
  local list = {}
  for _, expr in ipairs(exprs) do
    local th, err = M.threshold(expr)
    if not th then return nil, err end
    list[#list + 1] = th
  end
  return list
end

M.THRESHOLDS_FAILED = 99 -- as k6

--- A load run's exit status: 99 when a threshold failed; else 1 when something failed and no
--- threshold is on failures (a threshold on them is the gate); else 0.
function M.status(fig, thresholds)
  if not fig.thresholds_ok then return M.THRESHOLDS_FAILED end
  for _, th in ipairs(thresholds) do
    if th.key == "failures" or th.key == "failures_pct" then return 0 end
  end
  return fig.failures > 0 and 1 or 0
end

--- Checks thresholds against figures: sets figures.thresholds (an object keyed by the threshold
--- as written: {metric, value, ok}) and figures.thresholds_ok. A metric with no value (no
--- samples) fails.
function M.check(fig, thresholds)
  local all = true
  fig.thresholds = {}
  for _, th in ipairs(thresholds) do
    local v = fig[th.key]
    local ok = type(v) == "number" and OPS[th.op](v, th.value)
    all = all and ok
    fig.thresholds[th.expr] = { metric = th.key, value = v, ok = ok }
  end
  fig.thresholds_ok = all
  return all
end

--- The figures as one JSON line's object: every key of M.KEYS present (nil as null).
function M.json(fig)
  local cjson = require "cjson"
  local o = {}
  for _, k in ipairs(M.KEYS) do
    if fig[k] == nil then o[k] = cjson.null else o[k] = fig[k] end
  end
  for _, t in pairs(o.thresholds) do
    if t.value == nil then t.value = cjson.null end
  end
  return o
end

--- Prints the figures as a table (and the thresholds, each with its value) on out.
function M.print(fig, ncommands, out)
  local cli = require "sshchain.cli"
  out = out or io.stdout
  local function v(x) return x ~= nil and tostring(x) or "-" end
  local fl = {}
  for c, n in pairs(fig.failures_by_code) do
    fl[#fl + 1] = ("%s %d (first: %s)"):format(c, n, cli.clean(tostring(fig.failure_examples[c])))
  end
  table.sort(fl)
  out:write(("stress: %s users on %s (%s host%s)%s, %s\n"):format(v(fig.users), v(fig.target), v(fig.hosts),
    fig.hosts == 1 and "" or "s", ncommands and (", command list of " .. ncommands) or "", v(fig.mode)))
  cli.table({ "", "COUNT", "FAILED", "PER SECOND", "P50 ms", "P90 ms", "P99 ms", "MAX ms" }, {
    { "logins", v(fig.sessions), v(fig.sessions_failed), v(fig.logins_per_s), v(fig.logins_p50_ms),
      v(fig.logins_p90_ms), v(fig.logins_p99_ms), v(fig.logins_max_ms) },
    { "commands", v(fig.commands), v(fig.commands_failed), v(fig.commands_per_s), v(fig.p50_ms), v(fig.p90_ms),
      v(fig.p99_ms), v(fig.max_ms) },
  }, out)
  out:write(("peak %d concurrent sessions; %.2f s in all%s%s; failures: %s\n"):format(fig.peak_sessions,
    fig.duration_s, fig.shard and (" (shard " .. fig.shard .. ")") or "", fig.interrupted and " (interrupted)" or "",
    #fl > 0 and table.concat(fl, "; ") or "none"))
  if fig.commands_canceled > 0 then
    out:write(("%d commands were still running when the time was up (not counted)\n"):format(fig.commands_canceled))
  end
  local names = {}
  for expr in pairs(fig.thresholds) do names[#names + 1] = expr end
  table.sort(names)
  for _, expr in ipairs(names) do
    local t = fig.thresholds[expr]
    out:write(("threshold %s: %s (%s = %s)\n"):format(expr, t.ok and "ok" or "FAILED", t.metric,
      type(t.value) == "number" and tostring(t.value) or "no value"))
  end
end

---------------------------------------------------------------------------------------------------
-- Stage profiles: "30s:50,2m:200,30s:0" (k6's stages): over each stage the number of active users
-- goes linearly from the previous target (0 at first) to its own.

local UNITS = { [""] = 1, s = 1, m = 60, h = 3600 }

--- Seconds from "90", "90s", "1.5m", "2h"; nil when malformed.
function M.seconds(s)
  local n, u = tostring(s):match("^%s*([%d.]+)%s*([smh]?)%s*$")
  n = n and tonumber(n)
  return n and n * UNITS[u] or nil
end

--- Parses a stage list; returns {{duration=, target=}, ...} or nil and a message naming it.
function M.stages(text)
  local list = {}
  for part in (tostring(text) .. ","):gmatch("([^,]*),") do
    local d, n = part:match("^%s*([^:]+):%s*(%d+)%s*$")
    local secs = d and M.seconds(d)
    if not secs or secs <= 0 then
      return nil, ("bad stage %q in %q: write DURATION:USERS, e.g. 30s:50,2m:200,30s:0"):format(part, text)
    end
    list[#list + 1] = { duration = secs, target = math.tointeger(tonumber(n)) }
  end
  return list
end

--- A profile from stages: {stages=, total=seconds, max=users}, with :target(t) (active users at
--- t, a whole number) and :next_active(u, t) (the first time >= t at which user u is active, or
--- nil when never again).
local Profile = {}
Profile.__index = Profile

function M.profile(stages)
  local t, prev, max = 0, 0, 0
  local segs = {}
  for _, st in ipairs(stages) do
    segs[#segs + 1] = { t0 = t, t1 = t + st.duration, v0 = prev, v1 = st.target }
    t, prev = t + st.duration, st.target
    if st.target > max then max = st.target end
  end
  return setmetatable({ segs = segs, total = t, max = max }, Profile)
end

function Profile:value(t)
  for _, s in ipairs(self.segs) do
    if t < s.t1 then return s.v0 + (s.v1 - s.v0) * (t - s.t0) / (s.t1 - s.t0) end
  end
  local last = self.segs[#self.segs]
  return last and last.v1 or 0
end

function Profile:target(t) return math.floor(self:value(t) + 1e-9) end

function Profile:next_active(u, t)
  for _, s in ipairs(self.segs) do
    if s.t1 > t then
      local a = math.max(t, s.t0)
      if self:value(a) + 1e-9 >= u then return a end
      if s.v1 >= u and s.v1 > s.v0 then -- rising through u in this segment
        return s.t0 + (u - s.v0) / (s.v1 - s.v0) * (s.t1 - s.t0)
      end
    end
  end
  return nil
end

---------------------------------------------------------------------------------------------------
-- Samples files (--out): line 1 {"kind":"run", ...the run's meta, "start": epoch seconds},
-- then a sample a line, then {"kind":"end","duration_s":...,"interrupted":...}.

local function decode_line(cjson, path, n, line)
  local ok, obj = pcall(cjson.decode, line)
  if not ok or type(obj) ~= "table" then
    return nil, ("%s: line %d: not a JSON object (the file is cut short or is not a samples file): %s")
      :format(path, n, #line > 60 and line:sub(1, 60) .. "..." or line)
  end
  return obj
end

local function is_sample(o)
  return type(o.time) == "number" and type(o.latency_ms) == "number" and type(o.kind) == "string"
    and type(o.code) == "string" and type(o.host) == "string"
end

--- Opens a samples file: a reader with .run (line 1) and :next() -> sample, or nil at the end
--- (then .finish is the end record); errors (nil, message naming the line) for a bad line, a
--- missing end record or a file that is not one.
function M.reader(path)
  local cjson = require "cjson"
  local f, err = io.open(path)
  if not f then return nil, err end
  local first = f:read("l")
  if not first then
    f:close()
    return nil, path .. ": empty file (not a samples file from stress --out)"
  end
  local run, derr = decode_line(cjson, path, 1, first)
  if not run then
    f:close()
    return nil, derr
  end
  if run.kind ~= "run" or type(run.start) ~= "number" then
    f:close()
    return nil, path .. ": line 1 is not the run record of a samples file from stress --out"
  end
  local r = { path = path, run = run, n = 1 }
  function r.next()
    if r.finish then return nil end
    local line = f:read("l")
    if not line then
      f:close()
      return nil, ("%s: ends at line %d without the run's end record: the run was killed or the file is cut short")
        :format(path, r.n)
    end
    r.n = r.n + 1
    local o, e = decode_line(cjson, path, r.n, line)
    if not o then
      f:close()
      return nil, e
    end
    if o.kind == "end" then
      if type(o.duration_s) ~= "number" then
        f:close()
        return nil, ("%s: line %d: end record without duration_s"):format(path, r.n)
      end
      r.finish = o
      if f:read("l") then
        f:close()
        return nil, ("%s: line %d: more after the end record"):format(path, r.n + 1)
      end
      f:close()
      return nil
    end
    if not is_sample(o) then
      f:close()
      return nil, ("%s: line %d: not a sample (time, user, host, kind, latency_ms, code)"):format(path, r.n)
    end
    return o
  end
  return r
end

--- Replays samples files (one run, or the shards of one) into an accumulator, in time order;
--- returns the accumulator, the run's duration and whether it was interrupted; or nil, message.
function M.replay(paths)
  local readers, start, last_end = {}, math.huge, 0
  for i, p in ipairs(paths) do
    local r, err = M.reader(p)
    if not r then return nil, err end
    readers[i] = r
    if r.run.start < start then start = r.run.start end
  end
  local meta = {}
  local r1m = readers[1].run
  for _, k in ipairs { "target", "hosts", "users", "repeat", "mode" } do
    meta[k] = math.type(r1m[k]) == "float" and math.tointeger(r1m[k]) or r1m[k]
    if meta[k] == require("cjson").null then meta[k] = nil end
  end
  -- shards of one run: the users are those of every shard together
  meta.shard = #readers == 1 and r1m.shard or nil
  if #readers > 1 then
    meta.users = 0
    for _, r in ipairs(readers) do meta.users = meta.users + (math.tointeger(r.run.users) or 0) end
  end
  local st = M.new(meta)
  local heads = {}
  local function pull(i)
    local r = readers[i]
    local s, err = r.next()
    if s then
      s.time = M.usec(r.run.start - start + s.time)
      heads[i] = s
      return true
    end
    heads[i] = nil
    if err then return nil, err end
    local stop = r.run.start - start + r.finish.duration_s
    if stop > last_end then last_end = stop end
    return true
  end
  local interrupted = false
  for i = 1, #readers do
    local ok, err = pull(i)
    if not ok then return nil, err end
  end
  while true do
    local best
    for i = 1, #readers do
      if heads[i] and (not best or heads[i].time < heads[best].time) then best = i end
    end
    if not best then break end
    local s = heads[best]
    local ok, aerr = pcall(st.add, st, s)
    if not ok then return nil, ("%s: line %d: %s"):format(readers[best].path, readers[best].n, aerr) end
    local pok, perr = pull(best)
    if not pok then return nil, perr end
  end
  for _, r in ipairs(readers) do interrupted = interrupted or r.finish.interrupted == true end
  return st, #readers > 1 and M.usec(last_end) or readers[1].finish.duration_s, interrupted, readers
end

--- The figures (thresholds checked) and series of samples files: fig, series, passed; or nil
--- and a message naming the file and line.
function M.load(paths, thresholds)
  local st, duration, interrupted = M.replay(paths)
  if not st then return nil, duration end
  local fig = st:figures(duration, interrupted)
  local passed = M.check(fig, thresholds or {})
  return fig, st:series(duration), passed
end

return M
