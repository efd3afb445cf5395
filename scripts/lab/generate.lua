-- generate.lua LABDIR shell|configs|lablua [KEY=VALUE...]: everything the lab needs, made from
-- topology.lua (its one description).
--   shell    prints bash assignments for scripts/lab.sh: namespaces, links, bridge members,
--            servers, probe endpoints, users, keys
--   configs  writes LABDIR/conf/*.sshd_config, known_hosts (t3, t4 hashed), known_hosts.bad,
--            ssh_config, inventory.lua, inventory.env (needs LABDIR/hostkeys/*.pub); KBDINT=true|false
--   lablua   writes LABDIR/lab.lua for the specs; KBDINT=, SUDO=, and the big.bin digests are read
--            from LABDIR/www/
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local T = dofile(here .. "/topology.lua")
local lab, mode = arg[1], arg[2]
if not lab or not mode then
  io.stderr:write("usage: generate.lua LABDIR shell|configs|lablua [KEY=VALUE...]\n")
  os.exit(2)
end
local vars = {}
for i = 3, #arg do
  local k, v = arg[i]:match("^(%w+)=(.*)$")
  if k then vars[k] = v end
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end -- for bash
local function lq(s) return ("%q"):format(tostring(s)) end -- for Lua

local function read(path)
  local f = assert(io.open(path, "rb"), "cannot read " .. path)
  local d = f:read("a")
  f:close()
  return d
end

local function write(path, text, mode_bits)
  local tmp = path .. ".tmp"
  local f = assert(io.open(tmp, "w"))
  f:write(text)
  f:close()
  if mode_bits then os.execute(("chmod %s %s"):format(mode_bits, q(tmp))) end
  assert(os.rename(tmp, path))
end

local function sorted_keys(t)
  local k = {}
  for name in pairs(t) do k[#k + 1] = name end
  table.sort(k)
  return k
end

local function flatten(opts, out)
  out = out or {}
  for _, o in ipairs(opts) do
    if type(o) == "table" then flatten(o, out) else out[#out + 1] = o end
  end
  return out
end

local function target_names()
  local names = sorted_keys(T.targets)
  for _, n in ipairs(T.nodes) do names[#names + 1] = n.name end
  return names
end

local function target_addr(name)
  if T.targets[name] then return T.targets[name] end
  for _, n in ipairs(T.nodes) do if n.name == name then return n.addr end end
end

---------------------------------------------------------------------------------------------------
-- shell: what lab.sh builds and starts

local function shell()
  local out = {}
  local function line(s) out[#out + 1] = s end
  local nets, seen = {}, {}
  local function net(n)
    if n ~= "root" and not seen[n] then
      seen[n] = true
      nets[#nets + 1] = n
    end
  end
  for _, l in ipairs(T.links) do net(l.a) net(l.b) end
  net(T.bridge.ns)
  for _, name in ipairs(target_names()) do net("scl-" .. name) end
  line("RANGE=" .. q(T.range))
  line("NETS=(" .. table.concat(nets, " ") .. ")")
  line("LINKS=(")
  for _, l in ipairs(T.links) do
    line("  " .. q(table.concat({ l.a, l.a_if, l.a_addr, l.b, l.b_if, l.b_addr }, " ")))
  end
  line(")")
  line(("BRIDGE=%s"):format(q(table.concat({ T.bridge.ns, T.bridge.name, T.bridge.addr }, " "))))
  line("MEMBERS=(")
  for _, name in ipairs(target_names()) do line("  " .. q(name .. " " .. target_addr(name))) end
  line(")")
  line("SSHDS=(")
  for _, s in ipairs(T.servers) do line("  " .. q(s.name .. " " .. s.ns)) end
  line(")")
  line("HTTPS=(")
  for _, s in ipairs(T.servers) do
    if s.http then line("  " .. q(table.concat({ s.name, s.ns, s.addr, T.http_port }, " "))) end
  end
  line(")")
  line(("SILENT=%s"):format(q(table.concat({ T.silent.ns, T.silent.addr, T.silent.port }, " "))))
  -- probes: name, where from ("-": the root namespace, the path a client takes), namespace,
  -- address, port, kind
  line("ENDPOINTS=(")
  local probe_from = { ["scl-j1"] = "-", ["scl-j2"] = "scl-j1" }
  for _, s in ipairs(T.servers) do
    local from = probe_from[s.ns] or "scl-j2"
    line("  " .. q(table.concat({ s.name, from, s.ns, s.addr, s.port, "ssh" }, " ")))
    if s.http then line("  " .. q(table.concat({ s.name .. "-http", from, s.ns, s.addr, T.http_port, "http" }, " "))) end
  end
  line("  " .. q(table.concat({ T.silent.name, "-", T.silent.ns, T.silent.addr, T.silent.port, "silent" }, " ")))
  line(")")
  line("LAB_USERS=(" .. table.concat(sorted_keys(T.users), " ") .. ")")
  line("declare -A PASSWORD=(")
  for _, u in ipairs(sorted_keys(T.users)) do
    if T.users[u].password then line(("  [%s]=%s"):format(u, q(T.users[u].password))) end
  end
  line(")")
  local sudo = {}
  for _, u in ipairs(sorted_keys(T.users)) do if T.users[u].sudo then sudo[#sudo + 1] = u end end
  line("SUDO_USERS=(" .. table.concat(sudo, " ") .. ")")
  line("AUTHORIZED=(") -- user key
  for _, u in ipairs(sorted_keys(T.users)) do line("  " .. q(u .. " " .. T.users[u].key)) end
  line(")")
  line("CLIENT_KEYS=(") -- name type passphrase
  for _, k in ipairs(sorted_keys(T.client_keys)) do
    local c = T.client_keys[k]
    line("  " .. q(table.concat({ k, c.type, c.passphrase or "" }, " ")))
  end
  line(")")
  line("HOST_KEYS=(" .. table.concat(T.host_keys, " ") .. ")")
  line("CERTS=(") -- kind ca key principals
  for _, c in ipairs(T.certs) do line("  " .. q(table.concat({ c.kind, c.ca, c.key, c.principals }, " "))) end
  line(")")
  line("FIXTURES=(" .. table.concat(T.fixtures, " ") .. ")")
  io.write(table.concat(out, "\n"), "\n")
end

---------------------------------------------------------------------------------------------------
-- configs

local function hostkey(name)
  return (read(lab .. "/hostkeys/" .. name:match("^[^:]*") .. ".pub"):match("^(%S+ %S+)"))
end

local function known_name(s)
  return s.port == 22 and s.addr or ("[%s]:%d"):format(s.addr, s.port)
end

local function sshd_configs()
  os.execute("mkdir -p " .. q(lab .. "/conf") .. " " .. q(lab .. "/run"))
  for _, s in ipairs(T.servers) do
    local opts = (vars.KBDINT ~= "true" and s.options_without_pam) or s.options
    local lines = { "# " .. s.name .. ", generated by scripts/lab/generate.lua from topology.lua" }
    for _, o in ipairs(flatten(opts)) do lines[#lines + 1] = (o:gsub("%%LAB%%", lab)) end
    for _, o in ipairs {
      "Port " .. s.port, "ListenAddress " .. s.addr, "AddressFamily inet",
      "HostKey " .. lab .. "/hostkeys/" .. s.hostkey, "PidFile " .. lab .. "/run/" .. s.name .. ".pid",
      "AuthorizedKeysFile " .. lab .. "/authorized/%u", "AllowUsers " .. s.user, "StrictModes no",
      "PermitRootLogin no", "PubkeyAuthentication yes", "PermitEmptyPasswords no", "X11Forwarding no",
      "PrintMotd no", "AcceptEnv LANG LC_*", "Subsystem sftp internal-sftp", "LogLevel VERBOSE",
    } do lines[#lines + 1] = o end
    write(lab .. "/conf/" .. s.name .. ".sshd_config", table.concat(lines, "\n") .. "\n")
  end
end

local function known_hosts()
  local plain, hashed, seen = {}, {}, {}
  for _, s in ipairs(T.servers) do
    local name = known_name(s)
    local key = s.known == "hashed" and hashed or plain
    local entry = name .. " " .. hostkey(s.hostkey)
    if s.known and not seen[entry] then
      seen[entry] = true
      key[#key + 1] = entry
    end
  end
  local tmp = lab .. "/.khh"
  write(tmp, table.concat(hashed, "\n") .. "\n")
  assert(os.execute("ssh-keygen -q -H -f " .. q(tmp) .. " >/dev/null 2>&1"), "ssh-keygen -H failed")
  os.remove(tmp .. ".old")
  local hashed_text = read(tmp)
  os.remove(tmp)
  assert(hashed_text:find("^|1|"), "hashing known_hosts entries failed")
  write(lab .. "/known_hosts", table.concat(plain, "\n") .. "\n" .. hashed_text, "644")
  -- known_hosts.bad: j1's key (both ports) replaced by another one, as a man in the middle shows
  local bad = {}
  for _, e in ipairs(plain) do
    local name = e:match("^(%S+)")
    if name == "10.231.1.2" or name == "[10.231.1.2]:2200" then e = name .. " " .. hostkey("bad") end
    bad[#bad + 1] = e
  end
  write(lab .. "/known_hosts.bad", table.concat(bad, "\n") .. "\n" .. hashed_text, "644")
end

local function ssh_config()
  local K = lab .. "/keys"
  local out = { "# OpenSSH client config for the sshchain lab (generated): ssh -F " .. lab .. "/ssh_config t1" }
  for _, s in ipairs(T.servers) do
    if s.ssh_config or s.node then
      local u = T.users[s.user]
      out[#out + 1] = ("Host %s\n  HostName %s\n  Port %d\n  User %s\n  IdentityFile %s/id_%s"):format(
        s.name, s.addr, s.port, s.user, K, u.key)
      local jump = type(s.ssh_config) == "table" and s.ssh_config.jump
      if jump then out[#out + 1] = "  ProxyJump " .. jump end
    end
  end
  out[#out + 1] = ("Host *\n  UserKnownHostsFile %s/known_hosts\n  GlobalKnownHostsFile /dev/null"):format(lab)
  out[#out + 1] = "  StrictHostKeyChecking yes\n  IdentitiesOnly yes\n  ConnectTimeout 5"
  write(lab .. "/ssh_config", table.concat(out, "\n") .. "\n", "644")
end

local function inventory()
  local K = lab .. "/keys"
  local out = {
    "-- the sshchain lab as a Lua inventory (generated from scripts/lab/topology.lua); secrets from",
    "-- the environment: . " .. lab .. "/inventory.env",
    "return {",
    ("  defaults = { known_hosts = %s, timeout = 10 },"):format(lq(lab .. "/known_hosts")),
    "  hosts = {",
  }
  local env = {}
  for _, s in ipairs(T.servers) do
    local inv = s.inventory
    if inv then
      local u = T.users[s.user]
      local f = { ("host = %s"):format(lq(s.addr)) }
      if s.port ~= 22 then f[#f + 1] = "port = " .. s.port end
      f[#f + 1] = "user = " .. lq(s.user)
      if inv.password_env then
        f[#f + 1] = ("password = env %s"):format(lq(inv.password_env))
        env[#env + 1] = inv.password_env .. "=" .. u.password
      else
        f[#f + 1] = "identity = " .. lq(K .. "/id_" .. u.key)
      end
      if inv.passphrase_env then
        f[#f + 1] = ("passphrase = env %s"):format(lq(inv.passphrase_env))
        env[#env + 1] = inv.passphrase_env .. "=" .. T.client_keys[u.key].passphrase
      end
      if inv.via then f[#f + 1] = "via = " .. lq(inv.via) end
      out[#out + 1] = ("    %s = { %s },"):format(inv.name or s.name, table.concat(f, ", "))
    end
  end
  out[#out + 1] = "  },"
  out[#out + 1] = "  groups = {"
  for _, g in ipairs(sorted_keys(T.groups)) do
    local m = {}
    for _, x in ipairs(T.groups[g]) do m[#m + 1] = lq(x) end
    out[#out + 1] = ("    %s = { %s },"):format(g, table.concat(m, ", "))
  end
  out[#out + 1] = "  },"
  out[#out + 1] = "}"
  write(lab .. "/inventory.lua", table.concat(out, "\n") .. "\n", "644")
  table.sort(env)
  write(lab .. "/inventory.env", "export " .. table.concat(env, " ") .. "\n", "600")
end

---------------------------------------------------------------------------------------------------
-- lab.lua: the lab as the specs see it

local function spec_of(s)
  local u = T.users[s.user]
  local f = { ("host = %s"):format(lq(s.addr)), "port = " .. s.port, "user = " .. lq(s.user) }
  if s.spec.password then f[#f + 1] = "password = " .. lq(u.password) end
  if s.spec.identity then f[#f + 1] = "identity = " .. lq(lab .. "/keys/id_" .. u.key) end
  if s.spec.passphrase then f[#f + 1] = "passphrase = " .. lq(T.client_keys[u.key].passphrase) end
  return "{ " .. table.concat(f, ", ") .. " }"
end

local function sha256(path)
  local p = io.popen("sha256sum < " .. q(path))
  local d = p:read("a"):match("^(%x+)")
  p:close()
  return d
end

local function lab_lua()
  local K = lab .. "/keys"
  local out = { "-- the sshchain test lab, generated from scripts/lab/topology.lua by lab.sh up (removed by down)",
    "return {" }
  local function add(s) out[#out + 1] = "  " .. s end
  add("dir = " .. lq(lab) .. ",")
  add("known_hosts = " .. lq(lab .. "/known_hosts") .. ",")
  add("known_hosts_bad = " .. lq(lab .. "/known_hosts.bad") .. ",  -- j1's key (both ports) replaced")
  add("ssh_config = " .. lq(lab .. "/ssh_config") .. ",")
  local keys = {}
  for _, k in ipairs(sorted_keys(T.client_keys)) do keys[#keys + 1] = ("%s = %s"):format(k, lq(K .. "/id_" .. k)) end
  add("keys = { " .. table.concat(keys, ", ") .. " },  -- id_t1 has passphrase t1-pass; id_t2 is RSA")
  for _, s in ipairs(T.servers) do
    if s.spec then add(("%s = %s,"):format(s.spec_name or s.name, spec_of(s))) end
  end
  local pw = {}
  for _, u in ipairs(sorted_keys(T.users)) do
    if T.users[u].password then pw[#pw + 1] = ("%s = %s"):format(u:gsub("^scl", ""), lq(T.users[u].password)) end
  end
  add("passwords = { " .. table.concat(pw, ", ") .. " },  -- by user (sclNAME)")
  local http, sums = {}, {}
  for _, s in ipairs(T.servers) do
    if s.http then
      http[#http + 1] = ("%s = %s"):format(s.name, lq(s.addr .. ":" .. T.http_port))
      sums[#sums + 1] = ("%s = %s"):format(s.name, lq(sha256(lab .. "/www/" .. s.name .. "/big.bin")))
    end
  end
  add("http = { " .. table.concat(http, ", ") .. " },  -- GET /index.html -> \"sshchain lab tN\\n\", /big.bin: 1 MiB")
  add("big_size = 1048576,")
  add("big_sha256 = { " .. table.concat(sums, ", ") .. " },")
  add(("silent = { host = %s, port = %d },   -- accepts, never answers"):format(lq(T.silent.addr), T.silent.port))
  add(("refused = { host = %s, port = %d },  -- connection refused"):format(lq(T.refused.host), T.refused.port))
  add(("unreachable = { host = %s, port = %d }, -- no route"):format(lq(T.unreachable.host), T.unreachable.port))
  add("kbdint = " .. (vars.KBDINT == "true" and "true" or "false") .. ",  -- t2 authenticates by keyboard-interactive (else password)")
  add("sudo = " .. (vars.SUDO == "true" and "true" or "false") .. ",  -- sclt3 may sudo (password t3-secret)")
  local ns = {}
  for _, name in ipairs { "j1", "j2", "t1", "t2", "t3", "t4" } do ns[#ns + 1] = ("%s = %s"):format(name, lq("scl-" .. name)) end
  add("ns = { " .. table.concat(ns, ", ") .. " },")
  add("nodes = {  -- the cluster behind j2: user sclnode, key id_node")
  for _, n in ipairs(T.nodes) do
    add(("  { name = %s, host = %s, port = 22, user = \"sclnode\", identity = %s },"):format(lq(n.name), lq(n.addr),
      lq(K .. "/id_node")))
  end
  add("},")
  add("inventory = " .. lq(lab .. "/inventory.lua") .. ",  -- the lab as a Lua inventory (secrets: inventory.env)")
  add("inventory_env = " .. lq(lab .. "/inventory.env") .. ",")
  add("topology = " .. lq(here .. "/topology.lua") .. ",")
  out[#out + 1] = "}"
  write(lab .. "/lab.lua", table.concat(out, "\n") .. "\n", "644")
end

if mode == "shell" then
  shell()
elseif mode == "configs" then
  sshd_configs()
  known_hosts()
  ssh_config()
  inventory()
elseif mode == "lablua" then
  lab_lua()
else
  io.stderr:write("generate.lua: unknown mode " .. mode .. "\n")
  os.exit(2)
end
