-- sshchain.inventory: the hosts recipes work on, from a Lua inventory file or an OpenSSH client
-- config, and the selection of hosts by name, group or glob pattern.
--
-- A Lua inventory returns a table:
--
--   return {
--     defaults = { user = "root", identity = "~/.ssh/id_ed25519", timeout = 10 },  -- every host
--     hosts = {
--       gw    = { host = "10.0.0.1", user = "ops", password = env "GW_PASS" },
--       jump  = { host = "10.1.0.1", port = 2222, via = "gw" },
--       node1 = { host = "10.2.0.7", via = "jump", password = prompt "root password of node1" },
--     },
--     groups = { compute = { "node*" }, everything = { "compute", "gw" } },
--   }
--
-- A host's fields are host spec fields (see sshchain.connect) plus `via`: the host it is reached
-- through (whose own `via` applies in turn, as with ProxyJump), or a list of hosts passed in
-- order. Groups list host names, other groups, or glob patterns (* ? [...]). Secrets stay out of
-- the file: env "NAME" reads an environment variable (a host that needs a missing one fails with
-- an error naming it), and
-- prompt "text" asks on the terminal once, without echo, when a host that needs it is selected.
--
-- Any other file is read as ssh_config: its Host names (without wildcards) are the hosts,
-- ProxyJump gives the jumps, and a selector may be any name ssh_config resolves.
local config = require "sshchain.config"

local M = {}

local SECRET = {} -- metatable of deferred secrets

--- A glob (* ? [a-z] [!a-z]) as a Lua pattern anchored at both ends.
local function glob_to_pattern(g)
  local out, i = { "^" }, 1
  while i <= #g do
    local c = g:sub(i, i)
    local close = c == "[" and g:find("]", i + 2, true)
    if close then
      local set = g:sub(i + 1, close - 1):gsub("^!", "^"):gsub("%%", "%%%%")
      out[#out + 1] = "[" .. set .. "]"
      i = close + 1
    else
      out[#out + 1] = c == "*" and ".*" or c == "?" and "." or c:gsub("%W", "%%%0")
      i = i + 1
    end
  end
  return table.concat(out) .. "$"
end

local function is_glob(s) return s:find("[%*%?%[]") ~= nil end
M.glob_to_pattern = glob_to_pattern

--- Reads a line from the terminal without echo (for prompt "..." secrets). Echo is restored
--- whatever happens (Ctrl-C included).
local function ask(text)
  local tty = io.open("/dev/tty", "r+")
  if not tty then
    return nil, "needs a terminal to ask for \"" .. text .. "\" (or write env \"VAR\" in the inventory)"
  end
  tty:write(text, ": ")
  tty:flush()
  os.execute("stty -echo < /dev/tty 2>/dev/null")
  local ok, line = pcall(tty.read, tty, "l")
  os.execute("stty echo < /dev/tty 2>/dev/null")
  tty:write("\n")
  tty:close()
  if not ok then error(line, 0) end
  if not line then return nil, "no answer for \"" .. text .. "\"" end
  return line
end

M.ask = ask

local Inventory = {}
Inventory.__index = Inventory

--- Loads a Lua inventory (if the file is one) or an ssh_config file. Returns the inventory, or
--- nil and a message.
function M.load(path)
  local f = io.open(path, "r")
  if not f then return nil, "inventory " .. path .. ": cannot read it" end
  local text = f:read("a")
  f:close()
  local env = setmetatable({
    env = function(name)
      local v = os.getenv(name)
      if v == nil then return setmetatable({ env = name }, SECRET) end -- an error when used
      return v
    end,
    prompt = function(text_) return setmetatable({ text = text_ }, SECRET) end,
  }, { __index = _G })
  -- Lua when named *.lua or when it starts like Lua; else ssh_config (whose comments are #)
  local first = text:gsub("^%s+", ""):match("^[%w_%-]+") or text:gsub("^%s+", ""):sub(1, 2)
  local is_lua = path:match("%.lua$") or first == "return" or first == "local" or first == "--"
  if is_lua then
    local chunk, cerr = load(text, "@" .. path, "t", env)
    if not chunk then return nil, "inventory " .. tostring(cerr) end
    local ok, t = pcall(chunk)
    if not ok then return nil, "inventory " .. tostring(t) end
    if type(t) ~= "table" or type(t.hosts) ~= "table" then
      return nil, "inventory " .. path .. ": must return a table with a `hosts` table"
    end
    return M.from_table(t, path)
  end
  local names, seen = config.host_names(path)
  if not names then return nil, "inventory (ssh_config) " .. tostring(seen) end
  return setmetatable({ path = path, kind = "ssh_config", names = names, known = seen, groups = {} }, Inventory)
end

--- An inventory from a table of the Lua format (see above); nil and a message when it is not one.
function M.from_table(t, path)
  local where = "inventory " .. tostring(path)
  local names, known = {}, {}
  for name, h in pairs(t.hosts) do
    if type(name) ~= "string" or type(h) ~= "table" then
      return nil, where .. ": hosts must be written name = { host = ..., ... }"
    end
    names[#names + 1] = name
    known[name] = true
  end
  table.sort(names)
  if t.defaults ~= nil and type(t.defaults) ~= "table" then return nil, where .. ": defaults must be a table" end
  if t.defaults and t.defaults.via ~= nil then
    return nil, where .. ": `via` belongs to hosts, not to defaults"
  end
  for name, h in pairs(t.hosts) do
    local via = h.via
    if type(via) == "string" then via = { via } end
    if via ~= nil and type(via) ~= "table" then
      return nil, ("%s: host %s: via must be a host name or a list of them"):format(where, name)
    end
    for _, v in ipairs(via or {}) do
      if not known[v] then
        return nil, ("%s: host %s goes via %s, which is not a host"):format(where, name, tostring(v))
      end
    end
  end
  local groups = t.groups or {}
  if type(groups) ~= "table" then return nil, where .. ": groups must be a table" end
  for g, members in pairs(groups) do
    if type(g) ~= "string" or type(members) ~= "table" then
      return nil, where .. ": groups must be written name = { \"member\", ... }"
    end
    if known[g] then return nil, ("%s: %s is both a host and a group"):format(where, g) end
    for _, m in ipairs(members) do
      if type(m) ~= "string" then return nil, ("%s: group %s lists a %s"):format(where, g, type(m)) end
    end
  end
  return setmetatable({ path = path, kind = "lua", hosts = t.hosts, defaults = t.defaults or {},
    groups = groups, names = names, known = known, secrets = {} }, Inventory)
end

--- Host names matching one selector: a host, a group (recursively), or a glob pattern.
function Inventory:_match(sel, out, seen, depth)
  if depth > 20 then error("inventory: groups nested too deeply at " .. sel, 0) end
  local found = false
  local function add(n)
    found = true
    if not seen[n] then
      seen[n] = true
      out[#out + 1] = n
    end
  end
  if self.groups[sel] then
    for _, m in ipairs(self.groups[sel]) do
      if not self:_match(m, out, seen, depth + 1) then
        error(("inventory: group %s lists %s, which matches nothing"):format(sel, m), 0)
      end
    end
    if #self.groups[sel] == 0 then error(("inventory: group %s is empty"):format(sel), 0) end
    return true
  end
  if self.known[sel] then
    add(sel)
  elseif is_glob(sel) then
    local ok, pat = pcall(glob_to_pattern, sel)
    if ok then ok = pcall(string.match, "", pat) end
    if not ok then error(("bad pattern %q"):format(sel), 0) end
    for _, n in ipairs(self.names) do
      if n:match(pat) then add(n) end
    end
    if not found and self.kind == "ssh_config" and sel:find("[", 1, true) and not sel:find("[*?]") then
      add(sel) -- [v6addr]:port, not a pattern
    end
  elseif self.kind == "ssh_config" then
    add(sel) -- any name ssh_config resolves (user@host:port, a HostName pattern's match)
  end
  return found
end

--- select{selectors...} -> host names in the order given (globs expanded in name order), or nil
--- and a message naming the selector that matches nothing.
function Inventory:select(selectors)
  local out, seen = {}, {}
  for _, sel in ipairs(selectors) do
    local ok, found = pcall(self._match, self, sel, out, seen, 0)
    if not ok then return nil, found end
    if not found then
      return nil, ("no host or group matches %q in %s"):format(sel, tostring(self.path))
    end
  end
  return out
end

--- The groups, for listings: name -> list of members.
function Inventory:group_names()
  local g = {}
  for name in pairs(self.groups) do g[#g + 1] = name end
  table.sort(g)
  return g
end

local function secret_value(self, v, host)
  if getmetatable(v) ~= SECRET then return v end
  if v.env then
    error(("inventory %s: host %s needs the environment variable %s, which is not set")
      :format(tostring(self.path), host, v.env), 0)
  end
  local cached = self.secrets[v]
  if cached then return cached end
  local answer, err = ask(v.text)
  if not answer then error(("inventory %s: host %s: %s"):format(tostring(self.path), host, err), 0) end
  self.secrets[v] = answer
  return answer
end

--- The spec of one host of a Lua inventory (defaults applied, secrets asked), with name set.
function Inventory:_spec(name, keep_secrets)
  local h = self.hosts[name]
  local s = {}
  for k, v in pairs(self.defaults) do s[k] = v end
  for k, v in pairs(h) do
    if k ~= "via" then s[k] = v end
  end
  for k, v in pairs(s) do
    if keep_secrets and getmetatable(v) == SECRET then s[k] = nil else s[k] = secret_value(self, v, name) end
  end
  s.host = s.host or name -- as ssh_config: the name is the address unless host says otherwise
  s.name = name
  return s
end

--- chain(name [, {secrets=false}]) -> the list of specs (jump hosts first, `name` last), or nil
--- and a message. With secrets=false, fields holding secrets are left out (nothing is asked).
function Inventory:chain(name, opts)
  local keep = opts and opts.secrets == false
  if self.kind == "ssh_config" then
    self.chain_cache = self.chain_cache or {}
    local chain, err = config.chain(name, { config = self.path, cache = self.chain_cache })
    if not chain then return nil, "ssh_config: " .. err end
    return chain
  end
  if not self.hosts[name] then return nil, "no host " .. name .. " in " .. tostring(self.path) end
  local ok, chain = pcall(function()
    local function build(n, depth)
      if depth > 16 then error("inventory: `via` loop or chain deeper than 16 at " .. n, 0) end
      local via = self.hosts[n].via
      if type(via) == "string" then via = { via } end
      local list = {}
      if via and via[1] then
        list = build(via[1], depth + 1)
        for i = 2, #via do list[#list + 1] = self:_spec(via[i], keep) end
      end
      list[#list + 1] = self:_spec(n, keep)
      return list
    end
    return build(name, 0)
  end)
  if not ok then return nil, chain end
  return chain
end

--- Every chain for the names, asking for secrets first (before any parallel work starts).
function Inventory:chains(names)
  local out = {}
  for i, n in ipairs(names) do
    local c, err = self:chain(n)
    if not c then return nil, err end
    out[i] = c
  end
  return out
end

M.Inventory = Inventory
return M
