-- sshchain.recipes: the recipes bundled with sshlua (`sshlua -r NAME args`, `sshlua -r` lists
-- them). Each is a module sshchain.recipe.NAME (source in scripts/recipes/NAME.lua, compiled into
-- sshlua) returning { summary = "one line", main = function(argv) -> exit status }.
local M = {}

M.names = { "exec", "stress", "copy", "forward", "tree", "merge", "report", "mux" }

--- The recipe NAME, or nil when there is none; one that exists but fails to load raises (so the
--- user sees why).
local function load_recipe(name)
  if not name:match("^[%w_-]+$") then return nil end
  local module = "sshchain.recipe." .. name
  if not package.preload[module] and not package.searchpath(module, package.path) then return nil end
  local r = require(module)
  if type(r) == "table" and r.main then return r end
  return nil
end

function M.list(out)
  out = out or io.stdout
  out:write("Recipes (sshlua -r NAME --help for each):\n")
  for _, n in ipairs(M.names) do
    local ok, r = pcall(load_recipe, n)
    out:write(("  %-9s %s\n"):format(n, ok and r and r.summary or "(not available)"))
  end
end

--- main{name, args...} -> exit status
function M.main(argv)
  local name = argv[1]
  if not name or name == "-h" or name == "--help" then
    M.list()
    return 0
  end
  local r = load_recipe(name)
  if not r then
    io.stderr:write(("sshlua: no recipe %q\n"):format(name))
    M.list(io.stderr)
    return 2
  end
  local rest = table.move(argv, 2, #argv, 1, {})
  return r.main(rest) or 0
end

return M
