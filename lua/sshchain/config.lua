-- sshchain.config: reads OpenSSH client config files (ssh_config(5)) and turns a Host name into
-- a chain of host specs, ProxyJump included, so the engine builds the chain natively.
-- Supported: Host (patterns, negation, several per line), Include (globs, relative to ~/.ssh),
-- HostName (%h), Port, User, IdentityFile (several; %d %u %h %r %%), ProxyJump (comma lists,
-- [user@]host[:port] or Host names, nested through the first jump's own ProxyJump, "none"),
-- UserKnownHostsFile, StrictHostKeyChecking, ConnectTimeout, ServerAliveInterval.
-- Match blocks are skipped (their options never apply). First obtained value wins, as in OpenSSH.
local M = {}

local MULTI = { identityfile = true } -- options that accumulate instead of first-wins

local function home() return os.getenv("HOME") or "" end

local function expand_tilde(p)
  if p:sub(1, 2) == "~/" then return home() .. p:sub(2) end
  if p == "~" then return home() end
  return p
end

--- Splits an ssh_config line's arguments, honouring double quotes: a list, or nil and a message.
local function split_args(s)
  local out, i, n = {}, 1, #s
  while true do
    i = s:find("[^%s]", i)
    if not i then return out end
    if s:byte(i) == 34 then -- a quoted argument
      local j = s:find('"', i + 1, true)
      if not j then return nil, "unterminated quote" end
      out[#out + 1] = s:sub(i + 1, j - 1)
      i = j + 1
    else
      local j = s:find('[%s"]', i) or n + 1
      out[#out + 1] = s:sub(i, j - 1)
      i = j
    end
  end
end
M.split_args = split_args

--- Converts an ssh_config glob (* and ?) to a Lua pattern anchored at both ends.
local function glob_to_pattern(g)
  return "^" .. g:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*", ".*"):gsub("%?", ".") .. "$"
end

local function host_matches(patterns, name)
  local matched = false
  for _, p in ipairs(patterns) do
    local negate = p:sub(1, 1) == "!"
    if negate then p = p:sub(2) end
    if name:lower():match(glob_to_pattern(p:lower())) then
      if negate then return false end
      matched = true
    end
  end
  return matched
end

M.host_matches = host_matches

--- Expands an Include argument into file paths (sorted glob results), relative to ~/.ssh.
local function include_paths(arg, base_dir)
  local p = expand_tilde(arg)
  if p:sub(1, 1) ~= "/" then p = base_dir .. "/" .. p end
  if not p:find("[%*%?%[]") then return { p } end
  local list = {}
  local pipe = io.popen("for f in " .. p:gsub("([^%w%*%?%[%]/%._%-])", "\\%1") .. "; do [ -e \"$f\" ] && printf '%s\\n' \"$f\"; done 2>/dev/null")
  if pipe then
    for line in pipe:lines() do list[#list + 1] = line end
    pipe:close()
  end
  table.sort(list)
  return list
end

--- s without leading and trailing white space, in linear time (a pattern like "%s+$" is
--- quadratic on a long run of spaces inside the line).
local function trim(s)
  local a = s:find("%S")
  if not a then return "" end
  local b = #s
  while b > a do
    local c = s:byte(b)
    if c ~= 32 and (c < 9 or c > 13) then break end
    b = b - 1
  end
  return s:sub(a, b)
end
M.trim = trim

--- Splits one line into its keyword and arguments: key (lowercase), args; nil, message when the
--- quotes do not close; nil for a blank line or a comment.
function M.tokenize(line)
  line = trim(line)
  if line == "" or line:sub(1, 1) == "#" then return nil end
  local key, rest = line:match("^([%w]+)%s*=%s*(.*)$")
  if not key then key, rest = line:match("^([%w]+)%s+(.*)$") end
  if not key then key, rest = line, "" end
  local args, err = split_args(rest)
  if not args then return nil, err end
  return key:lower(), args
end

--- Parses config text into blocks (appended to `blocks`, after `current`); path names it in
--- messages and Include is resolved relative to it (opts.includes = false: Include is ignored).
function M.parse_text(text, path, depth, blocks, current, opts)
  depth = depth or 0
  blocks = blocks or { { patterns = { "*" }, options = {} } } -- options before any Host apply to all
  current = current or blocks[1]
  local n = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    local key, args = M.tokenize(line)
    if not key and args then return nil, ("%s:%d: %s"):format(path, n, args) end
    if key == "host" then
      current = { patterns = args, options = {} }
      blocks[#blocks + 1] = current
    elseif key == "match" then
      current = { patterns = {}, options = {}, match = true } -- never applies
      blocks[#blocks + 1] = current
    elseif key == "include" then
      if not opts or opts.includes ~= false then
        local base = path:match("^(.*)/[^/]*$") or "."
        if path:find(home() .. "/.ssh/", 1, true) == 1 or path == home() .. "/.ssh/config" then
          base = home() .. "/.ssh"
        end
        for _, a in ipairs(args) do
          for _, p in ipairs(include_paths(a, base)) do
            local ok, ierr = M.parse(p, depth + 1, blocks, current)
            if not ok then return nil, ierr end
          end
        end
      end
      -- lines after the Include continue the including block, after what the include added
      current = { patterns = current.patterns, options = {}, match = current.match }
      blocks[#blocks + 1] = current
    elseif key then
      current.options[#current.options + 1] = { key, args }
    end
  end
  return blocks, current
end

--- Parses a config file into a list of blocks {patterns=, options={{key, args}...}}.
-- Include is expanded in place. Errors return nil, message.
function M.parse(path, depth, blocks, current)
  depth = depth or 0
  if depth > 16 then return nil, path .. ": Include nested too deeply" end
  local f, err = io.open(path, "r")
  if not f then
    if depth > 0 then return blocks, current end -- a missing Include is not an error (as OpenSSH)
    return nil, err
  end
  local text = f:read("a")
  f:close()
  return M.parse_text(text, path, depth, blocks, current)
end

--- The options that apply to `name`: key -> first value (args list); multi keys -> list of values.
function M.lookup(blocks, name)
  local opts = {}
  for _, b in ipairs(blocks) do
    if not b.match and host_matches(b.patterns, name) then
      for _, o in ipairs(b.options) do
        local key, args = o[1], o[2]
        if MULTI[key] then
          opts[key] = opts[key] or {}
          opts[key][#opts[key] + 1] = args[1]
        elseif opts[key] == nil then
          opts[key] = args
        end
      end
    end
  end
  return opts
end

local function percent_expand(s, t)
  return (s:gsub("%%(.)", function(c)
    if c == "%" then return "%" end
    return t[c] or ("%" .. c)
  end))
end

local HOSTKEY_MODES = { yes = "strict", ask = "strict", ["accept-new"] = "accept-new", no = "off", off = "off" }

--- A host spec for `name` (a Host alias or [user@]host[:port]) from the parsed blocks, and the
--- raw ProxyJump value (nil, or "none").
function M.spec_for(blocks, name)
  name = name:gsub("^ssh://", "") -- ProxyJump also takes ssh://[user@]host[:port]
  local user, rest = name:match("^([^@]+)@(.+)$")
  rest = rest or name
  local alias, port = rest:match("^%[(.-)%]:(%d+)$")
  if not alias then alias = rest:match("^%[(.-)%]$") end
  if not alias then alias, port = rest:match("^([^:]+):(%d+)$") end
  alias = alias or rest
  local o = M.lookup(blocks, alias)
  local hostname = o.hostname and percent_expand(o.hostname[1], { h = alias }) or alias
  local spec = {
    host = hostname,
    port = tonumber(port) or (o.port and tonumber(o.port[1])) or nil,
    user = user or (o.user and o.user[1]) or nil,
    name = alias,
  }
  local local_user = os.getenv("USER") or "root"
  if o.identityfile then
    local ids = {}
    for _, p in ipairs(o.identityfile) do
      if p:lower() ~= "none" then
        ids[#ids + 1] = expand_tilde(percent_expand(p, { d = home(), u = local_user, h = hostname,
          r = spec.user or local_user }))
      end
    end
    spec.identity = ids
  end
  if o.userknownhostsfile then spec.known_hosts = expand_tilde(o.userknownhostsfile[1]) end
  if o.stricthostkeychecking then
    spec.host_key = HOSTKEY_MODES[o.stricthostkeychecking[1]:lower()] or "strict"
  end
  if o.connecttimeout then spec.timeout = tonumber(o.connecttimeout[1]) end
  if o.serveraliveinterval then
    local k = tonumber(o.serveraliveinterval[1])
    if k and k > 0 then spec.keepalive = k end
  end
  return spec, o.proxyjump and o.proxyjump[1] or nil
end

local function split_commas(s)
  local out = {}
  for part in s:gmatch("[^,]+") do out[#out + 1] = part:gsub("^%s+", ""):gsub("%s+$", "") end
  return out
end

--- The chain of specs (jump hosts first) to reach `name`. OpenSSH semantics: for
--- "ProxyJump a,b" the target is reached through a then b; a's own ProxyJump applies (nested),
--- b's does not.
function M.chain(blocks, name, depth)
  depth = depth or 0
  if depth > 10 then return nil, "ProxyJump loop or chain deeper than 10 at " .. name end
  local spec, jump = M.spec_for(blocks, name)
  if not jump or jump:lower() == "none" then return { spec } end
  local jumps = split_commas(jump)
  local chain, err = M.chain(blocks, jumps[1], depth + 1)
  if not chain then return nil, err end
  for i = 2, #jumps do chain[#chain + 1] = (M.spec_for(blocks, jumps[i])) end
  chain[#chain + 1] = spec
  return chain
end

--- resolve(name, opts) -> list of specs for sshchain.connect; opts.config (default
--- ~/.ssh/config). Spec fields from opts are applied by the caller as defaults.
function M.resolve(name, opts)
  local path = opts and opts.config or (home() .. "/.ssh/config")
  local blocks, err = M.parse(path)
  if not blocks then return nil, "ssh_config " .. path .. ": " .. tostring(err) end
  local chain, cerr = M.chain(blocks, name)
  if not chain then return nil, "ssh_config " .. path .. ": " .. cerr end
  return chain
end

return M
