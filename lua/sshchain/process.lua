-- sshchain.process: interactive processes (Session:spawn): a command or the login shell on a
-- channel of its own, with a pty when asked, fed and read as it runs; expect() waits for a
-- pattern as pexpect does. Back-pressure both ways: write() waits while the command does not take
-- its input, and output the script does not read stays in C (bounded: then the channel's window
-- closes and the command is held up) until read.
local sched = require "sshchain.sched"
local errors = require "sshchain.errors"

local M = {}

local WRITE_QUEUE = 256 * 1024 -- bytes queued for the command before write() waits

local Process = {}
Process.__index = Process
M.Process = Process

local SPAWN_OPTS = { pty = { types = { "boolean", "table" } }, env = "table" }

--- spawn(s, cmd | nil, opts): a Process, or nil, msg, CODE, err (no channel could be had).
function M.spawn(s, cmd, opts)
  if cmd ~= nil and type(cmd) ~= "string" then error("bad argument #1 to 'spawn' (string or nil expected)", 3) end
  opts = errors.check_options(opts, SPAWN_OPTS, "spawn", 3)
  local conn, msg, code, info = s:_take_slot(nil, "exec")
  if not conn then return nil, msg, code, info end
  local ok, op = pcall(conn.c.exec_start, conn.c, cmd,
    { stdin_open = true, stream = true, pty = opts.pty, env = opts.env, max_output = 0 })
  if not ok then
    s:_give_slot(conn)
    error(op, 3)
  end
  return setmetatable({ _s = s, _conn = conn, _op = op, _buf = { "", "" }, _pend = { {}, {} },
    label = s:label(), hop = s._c:hop() }, Process)
end

local function check(p, method)
  if getmetatable(p) ~= Process then error("bad self to '" .. method .. "' (sshchain process expected)", 3) end
  if p._closed then error("sshchain: the process is closed", 3) end
  return p._op
end

--- The channel slot goes back once the command has ended.
local function settle(p)
  if p._conn and p._op:done() then
    p._s:_give_slot(p._conn)
    p._conn = nil
  end
end

local STREAMS = { "stdout", "stderr" }

--- A failure of process p in the error convention (stage exec).
local function fail(p, code, reason, fmt, ...)
  return errors.fail(code, { label = p.label, hop = p.hop, stage = "exec", reason = reason }, fmt, ...)
end

--- Moves what C holds of both streams into the Lua buffers (the other one too: output left in C
--- past its high-water mark would hold the channel's window shut, and stall this one); whether
--- stream i has something now.
local function take_all(p)
  local o, e = p._op:take()
  if #o > 0 then table.insert(p._pend[1], o) end
  if #e > 0 then table.insert(p._pend[2], e) end
end

local function pull(p, i)
  take_all(p)
  local pend = p._pend[i]
  if pend[1] then -- chunks are joined when text is wanted, once (not on every arrival)
    p._buf[i] = p._buf[i] .. table.concat(pend)
    p._pend[i] = {}
  end
  return #p._buf[i] > 0
end

local function fail_of(p)
  take_all(p) -- result() hands over and frees what C still holds: keep it for read first
  local ok, msg, code, info = p._op:result()
  if not ok then return nil, msg, code, info end
end

--- Reads the next output of stream i: a chunk, or nil, "EOF" at its end, or nil, msg, CODE, err
--- (ETIMEDOUT after timeout seconds; the command's own failure).
local function read(p, i, timeout, method)
  local op = check(p, method)
  if not sched.await_until(op, function() return pull(p, i) end, timeout) then
    if op:done() then
      settle(p)
      local fmsg, fcode, finfo = select(2, fail_of(p))
      if fmsg and fcode ~= "ECANCELED" then return nil, fmsg, fcode, finfo end
      return nil, "EOF"
    end
    return fail(p, "ETIMEDOUT", "timeout", "nothing on %s for %gs", STREAMS[i], timeout)
  end
  local chunk = p._buf[i]
  p._buf[i] = ""
  return chunk
end

--- p:read([timeout]) -> the next chunk of stdout (with a pty: of the terminal), or nil, "EOF".
function Process:read(timeout) return read(self, 1, timeout, "read") end

--- p:read_stderr([timeout]) -> the next chunk of stderr (none with a pty).
function Process:read_stderr(timeout) return read(self, 2, timeout, "read_stderr") end

--- p:expect(patterns, timeout) -> index, match, before: the earliest match in stdout of one of
--- the Lua patterns (a string or a list; at the same place the first in the list wins), and
--- the text before it; what follows stays for the next read or expect. ETIMEDOUT keeps what
--- arrived (err.before has it too); EOF before a match: nil, "EOF", with err.before.
function Process:expect(patterns, timeout)
  local op = check(self, "expect")
  if type(patterns) == "string" then patterns = { patterns } end
  if type(patterns) ~= "table" or #patterns == 0 then error("bad argument #1 to 'expect' (pattern or list expected)", 2) end
  for i, pat in ipairs(patterns) do
    if type(pat) ~= "string" then error("bad argument #1 to 'expect' (pattern " .. i .. " is not a string)", 2) end
    local ok, err = pcall(string.find, "", pat)
    if not ok then error("bad argument #1 to 'expect' (pattern " .. i .. ": " .. err .. ")", 2) end
  end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
    error("bad argument #2 to 'expect' (seconds expected)", 2)
  end
  local found
  local function match()
    pull(self, 1)
    local text, best = self._buf[1], nil
    for i, pat in ipairs(patterns) do
      local a, b = text:find(pat)
      if a and (not best or a < best[2]) then best = { i, a, b } end
    end
    found = best
    return best ~= nil
  end
  if sched.await_until(op, match, timeout) then
    local i, a, b = found[1], found[2], found[3]
    local text = self._buf[1]
    self._buf[1] = text:sub(b + 1)
    return i, text:sub(a, b), text:sub(1, a - 1)
  end
  local before = self._buf[1]
  if op:done() then
    settle(self)
    return nil, "EOF", nil, { before = before }
  end
  local r, msg, code, err = fail(self, "ETIMEDOUT", "timeout", "no match for %s in %gs",
    table.concat(patterns, " | "), timeout)
  err.before = before
  return r, msg, code, err
end

--- What a terminal shows of text: lines end in \n; a carriage return inside a line starts it
--- again (a pager's "\r        \r" erases its prompt), so the text after the last one is kept.
--- Text without terminal controls: CSI sequences (colours, bracketed paste, erase to the end of
--- the line) and OSC ones (window titles).
local function strip_controls(text)
  return (text:gsub("\27%[[0-9;?<=>]*[ -/]*[@-~]", ""):gsub("\27%][^\7\27]*\7", "")
    :gsub("\27%][^\27]*\27\\", ""))
end

local function screen_text(text)
  local lines = {}
  for line in (strip_controls(text) .. "\n"):gmatch("([^\n]*)\n") do
    line = line:gsub("\r+$", "")
    lines[#lines + 1] = line:match("([^\r]*)$")
  end
  return table.concat(lines, "\n")
end
M.screen_text = screen_text

local DEFAULT_PROMPT = "[>#%$%%] ?$"
local DEFAULT_MORE = "%-%-[ ]?[Mm]ore[ ]?%-%-"
M.DEFAULT_PROMPT, M.DEFAULT_MORE = DEFAULT_PROMPT, DEFAULT_MORE

--- A prompt pattern anchored at the end of the text (a prompt is the last thing a shell sent).
local function anchor(prompt)
  if prompt:sub(-1) ~= "$" or prompt:sub(-2) == "%$" then return prompt .. "$" end
  return prompt
end
M.anchor = anchor

local COMMAND_OPTS = { prompt = "string", more = "string", timeout = { type = "number", min = 0 },
  newline = "string" }

--- p:command(line [, {prompt=, more=, timeout=, newline=}]) -> output, or nil, msg, CODE, err:
--- sends one command line to an interactive shell or device CLI on a pty (after its prompt),
--- answers its pager (more: a pattern, default "--More--", answered with a space), and returns
--- what it printed before the next prompt (prompt: a pattern matched at the end of what has
--- arrived, default one of > # $ % and a space), without the echo of the line, as a terminal
--- shows it. timeout: seconds for each wait (default 30).
function Process:command(line, opts)
  local op = check(self, "command")
  if type(line) ~= "string" or line:find("[\r\n]") then
    error("bad argument #1 to 'command' (one line expected)", 2)
  end
  opts = errors.check_options(opts, COMMAND_OPTS, "command", 2)
  -- both are the last thing the device sent (it waits for us): a "--More--" inside the output
  -- is text, not the pager
  local prompt = anchor(opts.prompt or DEFAULT_PROMPT)
  local more = opts.more or DEFAULT_MORE
  if more:sub(-1) ~= "$" or more:sub(-2) == "%$" then more = more .. "[ \t]*$" end
  local timeout = opts.timeout or 30
  if op:done() or self._stdin_closed then
    return fail(self, "EIO", "closed", "the shell has ended: cannot send %q", line)
  end
  self:write(line .. (opts.newline or "\r"))
  -- Prompts and pagers are the last thing the device sent (it waits for us), so they are looked
  -- for, without terminal controls, at the end of what arrived; complete lines move to `seen`
  -- as they come, so that a long output is scanned once.
  local seen, found = {}, nil
  local function match()
    pull(self, 1)
    -- the prompt comes after the echo's end of line: before it, "echo 50%" would look like one
    if not seen[1] and not self._buf[1]:find("\n", 1, true) then return false end
    local text = strip_controls(self._buf[1])
    local a = text:find(prompt)
    if a then found = { 1, text:sub(1, a - 1) } return true end
    a = text:find(more)
    if a then found = { 2, text:sub(1, a - 1) } return true end
    local cut = self._buf[1]:match(".*\n()")
    if cut then
      seen[#seen + 1] = self._buf[1]:sub(1, cut - 1)
      self._buf[1] = self._buf[1]:sub(cut)
    end
    return false
  end
  for _ = 1, 100000 do -- pages; bounded so that a pager that never ends cannot loop forever
    if not sched.await_until(op, match, timeout) then
      local eof = op:done()
      local last = table.concat(seen) .. self._buf[1]
      local r, msg, code, e = fail(self, eof and "EIO" or "ETIMEDOUT", eof and "closed" or "timeout",
        "%s after %q: no prompt matching %s%s (last output: %q)", eof and "the shell ended" or "nothing more",
        line, prompt, eof and "" or (" in %gs"):format(timeout), screen_text(last):sub(-80))
      e.before = last
      return r, msg, code, e
    end
    self._buf[1] = ""
    seen[#seen + 1] = found[2]
    if found[1] == 1 then break end
    self:write(" ")
  end
  -- the terminal's echo of the line, then the output, then the start of the prompt's line. A
  -- line wider than the terminal comes back wrapped (" \r" at each margin): the echo is
  -- recognised with blanks and carriage returns left out.
  local raw = strip_controls(table.concat(seen))
  local nl = raw:find("\n", 1, true)
  if nl and raw:sub(1, nl - 1):gsub("[\r ]", ""):find(line:gsub("[\r ]", ""), 1, true) then
    raw = raw:sub(nl + 1)
  end
  return (screen_text(raw):gsub("[^\n]*$", ""))
end

--- Queues data for op's stdin and waits while more than WRITE_QUEUE bytes are queued (the
--- command does not take them); false when its stdin is closed. exec's streamed stdin uses it too.
function M.write_queued(op, data)
  if op:done() or not op:write(data) then return false end
  if op:pending() > WRITE_QUEUE then
    op:notify_drain(WRITE_QUEUE // 2)
    sched.await_until(op, function() return op:pending() <= WRITE_QUEUE // 2 or op:done() end)
  end
  return true
end

--- p:write(data): queues data for the command's stdin, waiting while too much is queued (the
--- command does not read). Writing to a process whose stdin is closed raises.
function Process:write(data)
  local op = check(self, "write")
  if type(data) ~= "string" then error("bad argument #1 to 'write' (string expected)", 2) end
  if self._stdin_closed or not M.write_queued(op, data) then
    error("sshchain: the process's stdin is closed", 2)
  end
  return true
end

function Process:close_stdin()
  self._stdin_closed = true
  check(self, "close_stdin"):close_stdin()
end

function Process:resize(cols, rows) check(self, "resize"):resize(cols, rows) end

function Process:signal(name) check(self, "signal"):signal(name) end

--- p:wait([timeout]) -> {status=, signal=}, or nil, msg, CODE, err. Output not read meanwhile
--- is kept for read().
function Process:wait(timeout)
  local op = check(self, "wait")
  local done = sched.await_until(op, function()
    take_all(self)
    return op:done()
  end, timeout)
  if not done then
    return fail(self, "ETIMEDOUT", "timeout", "the command did not end in %gs", timeout)
  end
  settle(self)
  take_all(self)
  local r, msg, code, info = op:result()
  if not r then return nil, msg, code, info end
  return { status = r.status, signal = r.signal, ok = r.ok }
end

--- p:close(): ends the process (its channel is closed); safe twice.
function Process:close()
  if self._closed then return end
  if not self._op:done() then self._op:cancel() end
  self._closed = true
  if self._conn then
    self._s:_give_slot(self._conn)
    self._conn = nil
  end
end
Process.__close = Process.close
-- a process dropped unclosed gives its channel slot back (quietly: at exit its session may be gone)
Process.__gc = function(p) pcall(Process.close, p) end

function Process:is_running() return not self._op:done() end

return M
