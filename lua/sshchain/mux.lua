-- sshchain.mux: reuse across runs. A mux (`sshlua -r mux start HOST`) is a process that holds the
-- sessions to a jump host (and the hops before it) and serves SOCKS5 on a Unix socket only its
-- user can open; a chain whose jump host has `control` set (true: the default socket, or a path)
-- goes through that socket when a mux answers there, so a run opens only the hops after it.
-- Nothing there: the chain connects directly, silently. A socket that does not answer (a dead
-- mux): directly, with one line on stderr. A socket that is another user's, or open to others
-- (or in such a directory): refused. With `control_persist = S` on that jump host, a chain that
-- finds no mux starts one on first use (as ssh's ControlMaster auto with ControlPersist): a
-- background process that holds the hops and ends after S seconds without a client.
local core = require "sshchain.core"

local M = {}

--- The default socket of a mux that holds prefix (a list of specs, the held jump host last):
--- ~/.ssh/sshchain/mux-HASH, HASH from the hops' user@host:port (no secret).
function M.default_path(prefix)
  local parts = {}
  for i, s in ipairs(prefix) do parts[i] = ("%s@%s:%d"):format(s.user or "", s.host, s.port or 22) end
  local home = os.getenv("HOME") or core.user_home(core.local_info().user) or "/"
  return home .. "/.ssh/sshchain/mux-" .. core.sha1_hex(table.concat(parts, ",")):sub(1, 16)
end

--- The socket for hop i of a chain of normalized specs (its `control`), or nil.
function M.path_of(list, i)
  local c = list[i].control
  if c == true then return M.default_path(table.move(list, 1, i, 1, {})) end
  return c or nil
end

local warned = {}

local function say_once(path, fmt, ...)
  if warned[path] then return end
  warned[path] = true
  io.stderr:write(("sshchain: " .. fmt .. "\n"):format(...))
end

--- The whole of a small file (a pid file, a log), or nil.
function M.read_file(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
local read_file = M.read_file

--- A Lua literal for v (strings, numbers, booleans and tables of them), or nil, why.
local function literal(v, depth)
  local t = type(v)
  if t == "string" then return ("%q"):format(v) end
  if t == "number" or t == "boolean" then return tostring(v) end
  if t ~= "table" or depth > 8 then return nil, "a " .. t .. " in the specs" end
  local parts = {}
  for k, x in pairs(v) do
    local ks, kwhy = literal(k, depth + 1)
    local xs, xwhy = literal(x, depth + 1)
    if not ks or not xs then return nil, kwhy or xwhy end
    parts[#parts + 1] = "[" .. ks .. "]=" .. xs
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

--- The command that runs the mux recipe with argv: this sshlua, or this Lua interpreter with the
--- same module paths.
local function recipe_command(argv)
  local pid = read_file("/proc/self/stat"):match("^(%d+)")
  local p = io.popen("readlink /proc/" .. pid .. "/exe")
  local exe = p:read("l") or "sshlua"
  p:close()
  local q = function(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
  local args = {}
  for i, a in ipairs(argv) do args[i] = q(a) end
  if exe:match("sshlua$") then return q(exe) .. " -r mux " .. table.concat(args, " ") end
  local quoted = {}
  for i, a in ipairs(argv) do quoted[i] = ("%q"):format(a) end
  local code = ("package.path=%q package.cpath=%q os.exit(require('sshchain.recipes').main{'mux',%s})")
    :format(package.path, package.cpath, table.concat(quoted, ","))
  return q(exe) .. " -e " .. q(code)
end

--- Starts a mux on first use: prefix (normalized specs, the held jump host last) is written to a
--- private file beside the socket (0600 in its 0700 directory; the mux removes it once read) and
--- `mux run --specs FILE` goes to the background. Waits until it answers: true, or nil, why.
function M.start_on_first_use(prefix, path, persist)
  local held = {}
  for i, s in ipairs(prefix) do
    local c = {}
    for k, v in pairs(s) do c[k] = v end
    c.control, c.control_persist, c.mux_path = nil, nil, nil -- the mux connects directly
    held[i] = c
  end
  local text, why = literal(held, 0)
  if not text then return nil, why end
  local dir = path:match("^(.*)/[^/]*$") or "."
  if not os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "' && chmod 700 '" .. dir:gsub("'", "'\\''") .. "'") then
    return nil, "cannot make " .. dir
  end
  local specs = path .. ".specs" -- in the 0700 directory: nobody else can reach it
  local f, ferr = io.open(specs, "w")
  if not f then return nil, ferr end
  os.execute("chmod 600 '" .. specs:gsub("'", "'\\''") .. "'")
  f:write("return ", text, "\n")
  f:close()
  local log = path .. ".log"
  os.execute(("setsid %s > '%s' 2>&1 < /dev/null &"):format(recipe_command { "run", "--specs", specs, "--persist",
    tostring(persist), "--control", path }, log:gsub("'", "'\\''")))
  local wait = 5
  for _, s in ipairs(prefix) do wait = wait + (s.timeout or 30) end
  local deadline = core.now() + math.min(wait, 120)
  local sleep = require("sshchain.sched").sleep
  while core.now() < deadline do
    if core.mux_probe(path) == "ok" then return true end
    local pid = (read_file(path .. ".pid") or ""):match("^(%d+)")
    if pid and not read_file("/proc/" .. pid .. "/cmdline") then break end
    if not pid and not read_file(specs) and core.mux_probe(path) ~= "ok" then break end -- read, then gone
    sleep(0.05)
  end
  os.remove(specs)
  local said = (read_file(log) or ""):gsub("%s+$", ""):gsub("\n", "; ")
  return nil, said ~= "" and said or "it did not answer in time"
end

--- The chain to connect: list itself, or the hops after the deepest jump host whose mux
--- answers, the first of them reached through it (mux_path). nil, message, hop index when a
--- socket is refused.
function M.route(list)
  for i = #list - 1, 1, -1 do
    local path = list[i].control and M.path_of(list, i)
    if path then
      local state, why = core.mux_probe(path)
      if not state then return nil, why, i end
      local persist = list[i].control_persist
      if state ~= "ok" and persist then -- started on first use
        if state == "dead" then os.remove(path) end
        local ok, swhy = M.start_on_first_use(table.move(list, 1, i, 1, {}), path, persist)
        if ok then
          state = "ok"
        else
          say_once(path, "could not start a mux for %s (%s): connecting directly", list[i].name or list[i].host, swhy)
          state = "failed"
        end
      end
      if state == "ok" then
        local rest = table.move(list, i + 1, #list, 1, {})
        local first = {}
        for k, v in pairs(rest[1]) do first[k] = v end
        first.mux_path = path
        rest[1] = first
        return rest
      elseif state == "dead" then
        say_once(path, "the mux of %s does not answer (%s): connecting directly", list[i].name or list[i].host, why)
      end
    end
  end
  return list
end

return M
