-- sshchain: SSH through chains and trees of jump hosts. The public API, assembled from its
-- modules (each holds one thing; see README's layout):
--   sshchain.connect  connect.lua   sessions, jump sharing: session.lua, jumps.lua
--   s:exec, ...       session.lua   s:forward ... forward.lua; s:upload ... transfer.lua
--   host specs        spec.lua      errors as data, option checks: errors.lua
--   tasks             sched.lua     ssh_config: config.lua; trees as data: tree.lua
local core = require "sshchain.core"
local sched = require "sshchain.sched"
local errors = require "sshchain.errors"
local specs = require "sshchain.spec"
local jumps = require "sshchain.jumps"
local session = require "sshchain.session"
local transfer = require "sshchain.transfer"

local M = { _VERSION = "sshchain 0.1.0" }
M.spawn, M.sleep, M.run, M.parallel = sched.spawn, sched.sleep, sched.run, sched.parallel
M.config = require "sshchain.config"
local log = require "sshchain.log"
--- sshchain.log{level = 0..3, handler = function(level, hop_label, message) end}: what is said
--- of each connect (SSHCHAIN_DEBUG=N sets the level too); returns the level before.
function M.log(opts) return log.configure(opts) end
M.connect = require("sshchain.connect").connect
M.Session = session.Session
M.Forward = require("sshchain.forward").Forward
M.normalize_spec = specs.normalize
M.parse_target = specs.parse
M.errors = errors
M.interrupted = errors.interrupted
M.is_interrupted = errors.is_interrupted

--- Policy knobs: handshake pacing, channel limits, warnings (settings.on_warning(msg): nil
--- silences them).
M.settings = jumps.settings
M.settings.on_warning = function(msg) io.stderr:write(msg, "\n") end

--- A string quoted for a POSIX shell.
function M.shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

--- sshchain.copy(src_session, src_path, dst_session, dst_path [, opts]): from one server to
--- another, streamed through this process.
function M.copy(src, src_path, dst, dst_path, opts)
  return transfer.copy(src, src_path, dst, dst_path, opts, 2)
end

--- Inside another application's event loop (the contract cqueues uses for nesting): an fd that is
--- readable when sshchain has work, the milliseconds until its next timer (nil: none), and a step
--- that does the ready work and never blocks. sshchain.luv and sshchain.cqueues use them.
function M.pollfd() return core.pollfd() end
function M.timeout() return core.timeout() end
function M.step() sched.step(0) end

--- Live core objects (sessions, channels, ops) and tasks: for leak checks.
function M.stats()
  local s = core.stats()
  s.tasks = sched.ntasks()
  return s
end

M.core = core
M.sched = sched
M.jumps = jumps
M.tree = require "sshchain.tree"
return M
