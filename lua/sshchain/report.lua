-- sshchain.report: a load run's report as one self-contained HTML file (no script, no network:
-- the charts are inline SVG drawn here): logins/s and commands/s, command latency p50/p90/p99,
-- concurrent sessions, and failures by CODE over time, then the summary and the thresholds.
local M = {}

-- Series colours (a spec finds each in a screenshot of the report, so keep them distinct).
M.COLORS = { logins = "#1f77b4", commands = "#ff7f0e", p50 = "#2ca02c", p90 = "#9467bd", p99 = "#d62728",
  sessions = "#17becf" }
M.CODE_COLORS = { "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#393b79", "#637939", "#843c39" }

local W, H = 960, 240
local ML, MR, MT, MB = 64, 16, 16, 36

local function esc(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
    ["'"] = "&#39;" }))
end
M.escape = esc

--- Round tick steps (1, 2, 5 times a power of ten) for 0..max: the step and the axis top.
local function ticks(max)
  if not max or max <= 0 then max = 1 end
  local raw = max / 5
  local p = 10 ^ math.floor(math.log(raw, 10))
  local step = p
  for _, m in ipairs { 1, 2, 5, 10 } do
    if m * p >= raw then
      step = m * p
      break
    end
  end
  return step, math.ceil(max / step) * step
end

local function num(v)
  if v == math.floor(v) and math.abs(v) < 1e15 then return ("%d"):format(v) end
  return (("%.2f"):format(v):gsub("0+$", ""):gsub("%.$", ""))
end

--- One chart: opts = {title, unit, duration, series = {{name, color, points = {{t, v|nil}}}},
--- bars = {{name, color, points = {{t, v}}}} (stacked), width = bucket seconds, empty = text}.
local function chart(o)
  local out = {}
  local function w(...) for i = 1, select("#", ...) do out[#out + 1] = select(i, ...) end end
  local pw, ph = W - ML - MR, H - MT - MB
  local xmax = math.max(o.duration or 0, 1e-3)
  local ymax = 0
  for _, s in ipairs(o.series or {}) do
    for _, p in ipairs(s.points) do if p[2] and p[2] > ymax then ymax = p[2] end end
  end
  local stack = {}
  for _, s in ipairs(o.bars or {}) do
    for i, p in ipairs(s.points) do
      stack[i] = (stack[i] or 0) + (p[2] or 0)
      if stack[i] > ymax then ymax = stack[i] end
    end
  end
  local ystep, ytop = ticks(ymax)
  local xstep, xtop = ticks(xmax)
  xtop = math.max(xtop, xmax)
  local function X(t) return ML + t / xtop * pw end
  local function Y(v) return MT + ph - v / ytop * ph end
  w('<figure class="chart"><figcaption>', esc(o.title), '</figcaption>')
  w(('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img">')
    :format(W, H, W, H))
  w(('<rect x="%d" y="%d" width="%d" height="%d" fill="#ffffff" stroke="#cccccc"/>'):format(ML, MT, pw, ph))
  for v = 0, ytop + ystep / 2, ystep do
    local y = Y(v)
    w(('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eeeeee"/>'):format(ML, y, ML + pw, y))
    w(('<text x="%d" y="%.1f" text-anchor="end" class="tick">%s</text>'):format(ML - 6, y + 4, num(v)))
  end
  for t = 0, xtop + xstep / 2, xstep do
    local x = X(t)
    w(('<text x="%.1f" y="%d" text-anchor="middle" class="tick">%s</text>'):format(x, MT + ph + 16, num(t)))
  end
  w(('<text x="%d" y="%d" text-anchor="middle" class="axis">seconds since the start</text>'):format(
    ML + pw // 2, H - 4))
  w(('<text x="14" y="%d" class="axis" transform="rotate(-90 14 %d)" text-anchor="middle">%s</text>'):format(
    MT + ph // 2, MT + ph // 2, esc(o.unit)))
  -- stacked bars, one column per bucket
  local bw = math.max(1, (o.width or 1) / xtop * pw - 1)
  local base = {}
  for _, s in ipairs(o.bars or {}) do
    for i, p in ipairs(s.points) do
      local v = p[2] or 0
      if v > 0 then
        local b0 = base[i] or 0
        w(('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>'):format(X(p[1]), Y(b0 + v), bw,
          Y(b0) - Y(b0 + v), s.color))
        base[i] = b0 + v
      end
    end
  end
  -- lines, broken where a bucket has no value
  for _, s in ipairs(o.series or {}) do
    local run = {}
    local function flush()
      if #run == 1 then
        local x, y = run[1]:match("([^,]+),(.+)")
        w(('<circle cx="%s" cy="%s" r="3" fill="%s"/>'):format(x, y, s.color))
      elseif #run > 1 then
        w(('<polyline fill="none" stroke="%s" stroke-width="2.5" stroke-linejoin="round" points="%s"/>')
          :format(s.color, table.concat(run, " ")))
      end
      run = {}
    end
    for _, p in ipairs(s.points) do
      if p[2] then run[#run + 1] = ("%.1f,%.1f"):format(X(p[1]), Y(p[2])) else flush() end
    end
    flush()
  end
  if o.empty then
    w(('<text x="%d" y="%d" text-anchor="middle" class="empty">%s</text>'):format(ML + pw // 2, MT + ph // 2,
      esc(o.empty)))
  end
  w('</svg><div class="legend">')
  for _, s in ipairs(o.series or {}) do
    w(('<span><i style="border-color:%s"></i>%s</span>'):format(s.color, esc(s.name)))
  end
  for _, s in ipairs(o.bars or {}) do
    w(('<span><i style="border-color:%s"></i>%s</span>'):format(s.color, esc(s.name)))
  end
  w('</div></figure>\n')
  return table.concat(out)
end

local CSS = [[
body{font:14px/1.4 sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.sub{color:#555;margin-bottom:16px}
figure.chart{margin:0 0 16px}figcaption{font-weight:bold;margin-bottom:4px}
svg text{font:11px sans-serif;fill:#444}svg text.axis{font-size:12px}svg text.empty{font-size:14px;fill:#888}
.legend span{margin-right:16px;white-space:nowrap}
.legend i{display:inline-block;width:18px;border-top:3px solid;vertical-align:middle;margin-right:6px}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.pass{color:#1a7f37;font-weight:bold}.fail{color:#b00020;font-weight:bold}
]]

local function v(x)
  if x == nil then return "-" end
  if type(x) == "number" then return num(x) end
  return esc(x)
end

--- The report's HTML: fig (loadstats figures, thresholds checked), series (Stats:series()).
function M.html(fig, series)
  local dur = fig.duration_s or 0
  local b = series.buckets
  local function pts(key)
    local l = {}
    for i, x in ipairs(b) do l[i] = { math.min(x.t + series.width / 2, dur), x[key] } end -- mid-bucket
    return l
  end
  local codes, seen = {}, {}
  for _, x in ipairs(b) do
    for c in pairs(x.failures) do
      if not seen[c] then
        seen[c] = true
        codes[#codes + 1] = c
      end
    end
  end
  table.sort(codes)
  local bars = {}
  for i, c in ipairs(codes) do
    local l = {}
    for j, x in ipairs(b) do l[j] = { x.t, x.failures[c] or 0 } end
    bars[i] = { name = c, color = M.CODE_COLORS[(i - 1) % #M.CODE_COLORS + 1], points = l }
  end
  local out = {}
  local function w(...) for i = 1, select("#", ...) do out[#out + 1] = select(i, ...) end end
  w('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
    '<title>sshchain stress: ', esc(fig.target or "?"), '</title><style>', CSS, '</style></head><body>\n')
  w('<h1>sshchain stress: ', esc(fig.target or "?"), '</h1><div class="sub">', v(fig.users), ' users on ',
    v(fig.hosts), ' host(s), ', v(fig.mode), ', ', v(dur), ' s', fig.shard and (', shard ' .. esc(fig.shard)) or '',
    fig.interrupted and ' (interrupted)' or '', '; one point every ', num(series.width), ' s</div>\n')
  local exprs = {}
  for expr in pairs(fig.thresholds) do exprs[#exprs + 1] = expr end
  table.sort(exprs)
  if #exprs > 0 then
    w('<h2>Thresholds: <span class="', fig.thresholds_ok and 'pass">passed' or 'fail">FAILED', '</span></h2>',
      '<table><tr><th class="l">threshold</th><th class="l">metric</th><th>value</th><th class="l">result</th></tr>')
    for _, expr in ipairs(exprs) do
      local t = fig.thresholds[expr]
      w('<tr><td class="l">', esc(expr), '</td><td class="l">', esc(t.metric), '</td><td>', v(t.value),
        '</td><td class="l ', t.ok and 'pass">pass' or 'fail">FAIL', '</td></tr>')
    end
    w('</table>\n')
  end
  w('<h2>Over time</h2>\n')
  w(chart { title = "Logins and commands per second", unit = "per second", duration = dur, width = series.width,
    series = { { name = "logins/s", color = M.COLORS.logins, points = pts("logins_per_s") },
      { name = "commands/s", color = M.COLORS.commands, points = pts("commands_per_s") } } })
  w(chart { title = "Command latency", unit = "ms", duration = dur, width = series.width,
    series = { { name = "p50", color = M.COLORS.p50, points = pts("p50_ms") },
      { name = "p90", color = M.COLORS.p90, points = pts("p90_ms") },
      { name = "p99", color = M.COLORS.p99, points = pts("p99_ms") } },
    empty = fig.commands_ok == 0 and "no command succeeded" or nil })
  w(chart { title = "Concurrent sessions", unit = "sessions", duration = dur, width = series.width,
    series = { { name = "sessions open", color = M.COLORS.sessions, points = pts("sessions") } } })
  w(chart { title = "Failures per second, by CODE", unit = "per second", duration = dur, width = series.width,
    bars = bars, empty = #bars == 0 and "no failures" or nil })
  w('<h2>Summary</h2><table><tr><th class="l"></th><th>count</th><th>failed</th><th>per second</th>',
    '<th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>max ms</th></tr>')
  w('<tr><td class="l">logins</td><td>', v(fig.sessions), '</td><td>', v(fig.sessions_failed), '</td><td>',
    v(fig.logins_per_s), '</td><td>', v(fig.logins_p50_ms), '</td><td>', v(fig.logins_p90_ms), '</td><td>',
    v(fig.logins_p99_ms), '</td><td>', v(fig.logins_max_ms), '</td></tr>')
  w('<tr><td class="l">commands</td><td>', v(fig.commands), '</td><td>', v(fig.commands_failed), '</td><td>',
    v(fig.commands_per_s), '</td><td>', v(fig.p50_ms), '</td><td>', v(fig.p90_ms), '</td><td>', v(fig.p99_ms),
    '</td><td>', v(fig.max_ms), '</td></tr></table>\n')
  w('<p>Peak ', v(fig.peak_sessions), ' concurrent sessions; ', v(fig.failures), ' failures (', v(fig.failures_pct),
    ' % of logins and commands)', fig.commands_canceled > 0 and ('; ' .. fig.commands_canceled ..
    ' commands cut off at the end') or '', '.</p>\n')
  if #codes > 0 or next(fig.failures_by_code) then
    w('<h2>Failures by CODE</h2><table><tr><th class="l">CODE</th><th>count</th><th class="l">first</th></tr>')
    local cl = {}
    for c in pairs(fig.failures_by_code) do cl[#cl + 1] = c end
    table.sort(cl)
    for _, c in ipairs(cl) do
      w('<tr><td class="l">', esc(c), '</td><td>', v(fig.failures_by_code[c]), '</td><td class="l">',
        esc(fig.failure_examples[c] or ""), '</td></tr>')
    end
    w('</table>\n')
  end
  w('</body></html>\n')
  return table.concat(out)
end

--- Writes the report to path (through a temporary name: never half a file); true or nil, message.
function M.write(path, fig, series)
  local tmp = path .. ".part"
  local f, err = io.open(tmp, "w")
  if not f then return nil, err end
  local ok, werr = f:write(M.html(fig, series))
  local cok, cerr = f:close()
  if not ok or not cok then
    os.remove(tmp)
    return nil, werr or cerr
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    return nil, rerr
  end
  return true
end

return M
