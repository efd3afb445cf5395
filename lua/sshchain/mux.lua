-- sshchain.mux: reuse across runs. A mux (`sshlua -r mux start HOST`) is a process that holds the
-- sessions to a jump host (and the hops before it) and serves SOCKS5 on a Unix socket only its
-- user can open; a chain whose jump host has `control` set (true: the default socket, or a path)
-- goes through that socket when a mux answers there, so a run opens only the hops after it.
-- Nothing there: the chain connects directly, silently. A socket that does not answer (a dead
-- mux): directly, with one line on stderr. A socket that is another user's, or open to others
-- (or in such a directory): refused.
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

--- The chain to connect: list itself, or the hops after the deepest jump host whose mux
--- answers, the first of them reached through it (mux_path). nil, message, hop index when a
--- socket is refused.
function M.route(list)
  for i = #list - 1, 1, -1 do
    local path = list[i].control and M.path_of(list, i)
    if path then
      local state, why = core.mux_probe(path)
      if not state then return nil, why, i end
      if state == "ok" then
        local rest = table.move(list, i + 1, #list, 1, {})
        local first = {}
        for k, v in pairs(rest[1]) do first[k] = v end
        first.mux_path = path
        rest[1] = first
        return rest
      elseif state == "dead" and not warned[path] then
        warned[path] = true
        io.stderr:write(("sshchain: the mux of %s does not answer (%s): connecting directly\n"):format(
          list[i].name or list[i].host, why))
      end
    end
  end
  return list
end

return M
