-- sshchain.errors: the two kinds of error, in one place.
--
-- Misuse (a wrong argument type or value, a closed object) raises, naming the argument or the
-- option. Failures of the network, the servers or the files return nil, "CODE: message", CODE,
-- err, where err = {code=, message=, stage=, reason=, hop=} is the same failure as data: policy
-- reads err.stage and err.reason, never the message text.
local M = {}

--- fail(code, fields, fmt, ...) -> nil, "CODE: message", CODE, err. fields: {stage=, reason=,
--- hop=, label=} (each may be nil); the message is "LABEL: STAGE: text", as the C core writes it.
function M.fail(code, fields, fmt, ...)
  fields = fields or {}
  local text = select("#", ...) > 0 and fmt:format(...) or fmt
  local parts = {}
  if fields.label then parts[#parts + 1] = fields.label end
  if fields.stage then parts[#parts + 1] = fields.stage end
  parts[#parts + 1] = text
  local message = code .. ": " .. table.concat(parts, ": ")
  return nil, message, code, { code = code, message = message, stage = fields.stage,
    reason = fields.reason, hop = fields.hop }
end

--- The error table of a failure result (msg, code, err as returned), made when a caller only
--- had the message and code.
function M.info(msg, code, err)
  if type(err) == "table" then return err end
  return { code = code or M.code_of(msg), message = msg }
end

--- The CODE a message or error value carries: "ECONNECT: ..." gives ECONNECT, also after a
--- "file:line: " position that error() or assert() put in front; EERROR when there is none.
function M.code_of(e)
  if type(e) == "table" and type(e.code) == "string" then return e.code end
  local mt = type(e) == "table" and getmetatable(e)
  if mt and mt.__tostring then e = tostring(e) end -- error objects that print as their message
  if type(e) ~= "string" then return "EERROR" end
  return e:match("^(E%u+): ") or e:match("^[^\n]-:%d+: (E%u+): ") or "EERROR"
end

---------------------------------------------------------------------------------------------------
-- Interruption: Ctrl-C raises this value (sshlua's hook, the module's own in plain lua5.4), so that
-- recipes and scripts can tell it from other errors without reading text.

local Interrupted = setmetatable({}, { __tostring = function() return "interrupted!" end,
  __name = "sshchain.interrupted" })
M.interrupted = Interrupted
require("sshchain.core").set_interrupted(Interrupted)

function M.is_interrupted(e) return e == Interrupted end

---------------------------------------------------------------------------------------------------
-- Options

local function describe(rule)
  if type(rule) == "string" then return rule end
  local t = rule.type
  if rule.values then
    local v = {}
    for _, x in ipairs(rule.values) do v[#v + 1] = ("%q"):format(x) end
    return table.concat(v, ", ")
  end
  if rule.integer then t = "integer" end
  if rule.min and rule.max then return ("%s from %s to %s"):format(t, rule.min, rule.max) end
  if rule.min then return ("%s of at least %s"):format(t, rule.min) end
  return t
end

--- Whether v satisfies rule: a type name ("string", "number", "boolean", "function", "table", "any"),
--- or {type=, min=, max=, integer=, values={...}, nul=false (strings: no NUL byte), types={...}}.
local function satisfies(v, rule)
  if rule == "any" then return true end
  if type(rule) == "string" then
    if rule == "string" and type(v) == "string" then return not v:find("\0", 1, true) end
    return type(v) == rule
  end
  if rule.types then
    local ok = false
    for _, t in ipairs(rule.types) do ok = ok or type(v) == t end
    if not ok then return false end
  elseif rule.type and type(v) ~= rule.type then
    return false
  end
  if type(v) == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return false end
    if rule.integer and math.type(v) ~= "integer" and v ~= math.floor(v) then return false end
    if rule.min and v < rule.min then return false end
    if rule.max and v > rule.max then return false end
  elseif type(v) == "string" and rule.nul ~= true and v:find("\0", 1, true) then
    return false
  end
  if rule.values then
    for _, x in ipairs(rule.values) do if v == x then return true end end
    return false
  end
  return true
end

--- Checks an options table against schema {name = rule}; raises (at level) naming the first
--- unknown option or bad value. Returns opts, or {} for nil.
function M.check_options(opts, schema, what, level)
  level = (level or 1) + 1
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(("bad options to '%s' (table expected)"):format(what), level) end
  for k, v in pairs(opts) do
    local rule = schema[k]
    if rule == nil then error(("%s: unknown option '%s'"):format(what, tostring(k)), level) end
    if type(v) == "string" and v:find("\0", 1, true) and not (type(rule) == "table" and rule.nul) then
      error(("%s: option '%s' holds a NUL byte"):format(what, k), level)
    end
    if not satisfies(v, rule) then
      local shown = type(v) == "string" and ("%q"):format(v) or tostring(v)
      error(("%s: option '%s' must be a %s (got %s)"):format(what, k, describe(rule), shown), level)
    end
  end
  return opts
end

M.satisfies = satisfies
M.describe = describe

return M
