-- sshchain.config: OpenSSH's client configuration (ssh_config(5), as OpenSSH 9.2 reads it), the
-- effective configuration of a host (what `ssh -G` prints), and the chain of host specs it means,
-- ProxyJump included, so that the engine builds the chain natively.
--
-- Files are read as ssh reads them: the -F file alone, or ~/.ssh/config then /etc/ssh/ssh_config;
-- Host and Match (host, originalhost, user, localuser, exec, all, canonical, final, negation)
-- decide which lines apply, evaluated in order; the first value obtained wins (IdentityFile,
-- CertificateFile and the forwards accumulate); Include (globs, ~, tokens, relative to ~/.ssh or
-- /etc/ssh) is read in place. An unknown keyword is an error naming file and line, unless
-- IgnoreUnknown lists it; a keyword OpenSSH knows that sshchain does not implement is said once
-- on stderr when it applies (M.on_unsupported).
local core = require "sshchain.core"

local M = {}

---------------------------------------------------------------------------------------------------
-- Keywords (OpenSSH 9.2 as Debian builds it). impl: sshchain uses it. known: OpenSSH's, not
-- sshchain's: said once when it applies with a value that would change something. deprecated:
-- ignored without a word (as ssh). unsupported: ssh itself says "Unsupported option".

local IMPL = {
  "host", "match", "include", "hostname", "user", "port", "identityfile", "certificatefile",
  "proxyjump", "proxycommand", "userknownhostsfile", "globalknownhostsfile",
  "stricthostkeychecking", "identitiesonly", "identityagent", "forwardagent", "connecttimeout",
  "serveraliveinterval", "serveralivecountmax", "kexalgorithms", "hostkeyalgorithms", "ciphers",
  "macs", "pubkeyacceptedalgorithms", "ignoreunknown", "hostkeyalias", "batchmode", "loglevel",
  "sendenv", "hashknownhosts", "controlmaster", "controlpersist", "controlpath",
}
local KNOWN = {
  "forwardx11", "forwardx11trusted", "forwardx11timeout", "exitonforwardfailure", "xauthlocation",
  "gatewayports", "passwordauthentication", "kbdinteractiveauthentication", "kbdinteractivedevices",
  "pubkeyauthentication", "hostbasedauthentication", "addkeystoagent", "remoteforward",
  "localforward", "permitremoteopen", "escapechar", "connectionattempts", "checkhostip",
  "compression", "tcpkeepalive", "numberofpasswordprompts", "syslogfacility", "logverbose",
  "dynamicforward", "preferredauthentications", "casignaturealgorithms", "bindaddress",
  "bindinterface", "clearallforwardings", "enablesshkeysign", "verifyhostkeydns",
  "nohostauthenticationforlocalhost", "rekeylimit", "addressfamily", "setenv",
  "tunnel", "tunneldevice", "localcommand",
  "permitlocalcommand", "remotecommand", "visualhostkey", "ipqos", "requesttty", "sessiontype",
  "stdinnull", "forkafterauthentication", "proxyusefdpass", "canonicaldomains",
  "canonicalizefallbacklocal", "canonicalizehostname", "canonicalizemaxdots",
  "canonicalizepermittedcnames", "streamlocalbindmask", "streamlocalbindunlink", "revokedhostkeys",
  "fingerprinthash", "updatehostkeys", "hostbasedacceptedalgorithms", "securitykeyprovider",
  "knownhostscommand", "requiredrsasize", "enableescapecommandline", "pkcs11provider",
  "gssapiauthentication", "gssapidelegatecredentials", "gssapikeyexchange", "gssapitrustdns",
  "gssapirenewalforcesrekey", "gssapiclientidentity", "gssapiserveridentity", "gssapikexalgorithms",
}
-- other names ssh takes for a keyword
local ALIAS = {
  identityfile2 = "identityfile", challengeresponseauthentication = "kbdinteractiveauthentication",
  skeyauthentication = "kbdinteractiveauthentication", tisauthentication = "kbdinteractiveauthentication",
  dsaauthentication = "pubkeyauthentication", keepalive = "tcpkeepalive",
  hostbasedkeytypes = "hostbasedacceptedalgorithms", pubkeyacceptedkeytypes = "pubkeyacceptedalgorithms",
  smartcarddevice = "pkcs11provider", protocolkeepalives = "serveraliveinterval",
  setuptimeout = "serveraliveinterval",
}
local DEPRECATED = { "protocol", "cipher", "fallbacktorsh", "globalknownhostsfile2", "rhostsauthentication",
  "userknownhostsfile2", "useroaming", "usersh", "useprivilegedport", "useblacklistedkeys" }
local UNSUPPORTED = { "afstokenpassing", "kerberosauthentication", "kerberostgtpassing", "rsaauthentication",
  "rhostsrsaauthentication", "compressionlevel" }

-- a known keyword with this value changes nothing sshchain does: not said
local NOOP = {
  forwardx11 = "no", exitonforwardfailure = "no", gatewayports = "no", hostbasedauthentication = "no",
  addkeystoagent = "no", checkhostip = "no", compression = "no", clearallforwardings = "no",
  enablesshkeysign = "no", verifyhostkeydns = "no", controlmaster = "no", tunnel = "no",
  permitlocalcommand = "no", visualhostkey = "no", requesttty = "no", stdinnull = "no",
  forkafterauthentication = "no", proxyusefdpass = "no", canonicalizehostname = "no",
  updatehostkeys = "no", gssapiauthentication = "no", gssapidelegatecredentials = "no",
  gssapikeyexchange = "no", passwordauthentication = "yes",
  kbdinteractiveauthentication = "yes", pubkeyauthentication = "yes", controlpath = "none",
  controlpersist = "no", fingerprinthash = "sha256", syslogfacility = true, logverbose = true,
  xauthlocation = true, forwardx11trusted = true, forwardx11timeout = true, escapechar = true,
  numberofpasswordprompts = true, tcpkeepalive = "yes", streamlocalbindmask = true,
  streamlocalbindunlink = "no", ipqos = true, rekeylimit = true, connectionattempts = "1",
}

local KIND = {}
for _, k in ipairs(IMPL) do KIND[k] = "impl" end
for _, k in ipairs(KNOWN) do KIND[k] = "known" end
for _, k in ipairs(DEPRECATED) do KIND[k] = "deprecated" end
for _, k in ipairs(UNSUPPORTED) do KIND[k] = "unsupported" end
M.KIND = KIND
M.IMPLEMENTED = IMPL

-- values that accumulate; every other keyword keeps its first value
local MULTI = { identityfile = true, certificatefile = true, localforward = true, remoteforward = true,
  dynamicforward = true, sendenv = true }
-- keywords whose line may have several arguments (the others take exactly one)
local MANY = { host = true, match = true, include = true, userknownhostsfile = true, globalknownhostsfile = true,
  sendenv = true, setenv = true, canonicaldomains = true, canonicalizepermittedcnames = true, ipqos = true,
  rekeylimit = true, localforward = true, remoteforward = true, permitremoteopen = true, logverbose = true,
  proxycommand = true, localcommand = true, remotecommand = true, knownhostscommand = true,
  proxyjump = true }

---------------------------------------------------------------------------------------------------
-- Algorithms: OpenSSH 9.2's defaults and everything it supports (ssh -Q), for + - ^ lists.

local function J(t) return table.concat(t, ",") end

local ALGS = {
  kexalgorithms = {
    default = J {
      "sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com", "curve25519-sha256",
      "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256", "ecdh-sha2-nistp384", "ecdh-sha2-nistp521",
      "diffie-hellman-group-exchange-sha256", "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512",
      "diffie-hellman-group14-sha256",
    },
    all = J {
      "diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1", "diffie-hellman-group14-sha256",
      "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512", "diffie-hellman-group-exchange-sha1",
      "diffie-hellman-group-exchange-sha256", "ecdh-sha2-nistp256", "ecdh-sha2-nistp384", "ecdh-sha2-nistp521",
      "curve25519-sha256", "curve25519-sha256@libssh.org", "sntrup761x25519-sha512",
      "sntrup761x25519-sha512@openssh.com",
    },
    bad = "Bad SSH2 KexAlgorithms '%s'.", wild = false,
  },
  ciphers = {
    default = J {
      "chacha20-poly1305@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr", "aes128-gcm@openssh.com",
      "aes256-gcm@openssh.com",
    },
    all = J {
      "3des-cbc", "aes128-cbc", "aes192-cbc", "aes256-cbc", "aes128-ctr", "aes192-ctr", "aes256-ctr",
      "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
    },
    bad = "Bad SSH2 cipher spec '%s'.", wild = false,
  },
  macs = {
    default = J {
      "umac-64-etm@openssh.com", "umac-128-etm@openssh.com", "hmac-sha2-256-etm@openssh.com",
      "hmac-sha2-512-etm@openssh.com", "hmac-sha1-etm@openssh.com", "umac-64@openssh.com",
      "umac-128@openssh.com", "hmac-sha2-256", "hmac-sha2-512", "hmac-sha1",
    },
    all = J {
      "hmac-sha1", "hmac-sha1-96", "hmac-sha2-256", "hmac-sha2-512", "hmac-md5", "hmac-md5-96",
      "umac-64@openssh.com", "umac-128@openssh.com", "hmac-sha1-etm@openssh.com",
      "hmac-sha1-96-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com",
      "hmac-md5-etm@openssh.com", "hmac-md5-96-etm@openssh.com", "umac-64-etm@openssh.com",
      "umac-128-etm@openssh.com",
    },
    bad = "Bad SSH2 MAC spec '%s'.", wild = false,
  },
  hostkeyalgorithms = {
    default = J {
      "ssh-ed25519-cert-v01@openssh.com", "ecdsa-sha2-nistp256-cert-v01@openssh.com",
      "ecdsa-sha2-nistp384-cert-v01@openssh.com", "ecdsa-sha2-nistp521-cert-v01@openssh.com",
      "sk-ssh-ed25519-cert-v01@openssh.com", "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
      "rsa-sha2-512-cert-v01@openssh.com", "rsa-sha2-256-cert-v01@openssh.com", "ssh-ed25519",
      "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
      "sk-ecdsa-sha2-nistp256@openssh.com", "rsa-sha2-512", "rsa-sha2-256",
    },
    all = J {
      "ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com", "sk-ssh-ed25519@openssh.com",
      "sk-ssh-ed25519-cert-v01@openssh.com", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256-cert-v01@openssh.com",
      "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384-cert-v01@openssh.com", "ecdsa-sha2-nistp521",
      "ecdsa-sha2-nistp521-cert-v01@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
      "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com", "webauthn-sk-ecdsa-sha2-nistp256@openssh.com", "ssh-dss",
      "ssh-dss-cert-v01@openssh.com", "ssh-rsa", "ssh-rsa-cert-v01@openssh.com", "rsa-sha2-256",
      "rsa-sha2-256-cert-v01@openssh.com", "rsa-sha2-512", "rsa-sha2-512-cert-v01@openssh.com",
    },
    bad = "Bad key types '%s'.", wild = true,
  },
}
ALGS.pubkeyacceptedalgorithms = { default = ALGS.hostkeyalgorithms.default, all = ALGS.hostkeyalgorithms.all,
  bad = "Bad key types '%s'.", wild = true }
M.ALGS = ALGS

-- What libssh 0.10 supports and uses by default (Debian's build: no DSA, no blowfish, no umac):
-- a list from ssh_config is handed over without the names libssh lacks; spec fields (kex=, ...)
-- are computed against these defaults.
local LIBSSH = {
  kexalgorithms = {
    all = J {
      "curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256", "ecdh-sha2-nistp384",
      "ecdh-sha2-nistp521", "diffie-hellman-group18-sha512", "diffie-hellman-group16-sha512",
      "diffie-hellman-group-exchange-sha256", "diffie-hellman-group14-sha256",
      "diffie-hellman-group-exchange-sha1", "diffie-hellman-group14-sha1", "diffie-hellman-group1-sha1",
    },
    default = J {
      "curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256", "ecdh-sha2-nistp384",
      "ecdh-sha2-nistp521", "diffie-hellman-group18-sha512", "diffie-hellman-group16-sha512",
      "diffie-hellman-group-exchange-sha256", "diffie-hellman-group14-sha256",
    },
  },
  ciphers = {
    all = J {
      "aes256-gcm@openssh.com", "aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes256-ctr",
      "aes192-ctr", "aes128-ctr", "aes256-cbc", "aes192-cbc", "aes128-cbc", "3des-cbc",
    },
    default = J {
      "aes256-gcm@openssh.com", "aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes256-ctr",
      "aes192-ctr", "aes128-ctr",
    },
  },
  macs = {
    all = J {
      "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-sha1-etm@openssh.com",
      "hmac-sha2-256", "hmac-sha2-512", "hmac-sha1",
    },
    default = J {
      "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-sha2-256", "hmac-sha2-512",
    },
  },
  hostkeyalgorithms = {
    all = J {
      "ssh-ed25519", "ecdsa-sha2-nistp521", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp256",
      "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com", "rsa-sha2-512", "rsa-sha2-256",
      "ssh-rsa",
    },
    default = J {
      "ssh-ed25519", "ecdsa-sha2-nistp521", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp256",
      "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com", "rsa-sha2-512", "rsa-sha2-256",
    },
  },
  pubkeyacceptedalgorithms = {
    all = J {
      "ssh-ed25519-cert-v01@openssh.com", "sk-ssh-ed25519-cert-v01@openssh.com",
      "ecdsa-sha2-nistp521-cert-v01@openssh.com", "ecdsa-sha2-nistp384-cert-v01@openssh.com",
      "ecdsa-sha2-nistp256-cert-v01@openssh.com", "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
      "rsa-sha2-512-cert-v01@openssh.com", "rsa-sha2-256-cert-v01@openssh.com", "ssh-rsa-cert-v01@openssh.com",
      "ssh-ed25519", "ecdsa-sha2-nistp521", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp256",
      "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com", "rsa-sha2-512", "rsa-sha2-256",
      "ssh-rsa",
    },
    default = J {
      "ssh-ed25519-cert-v01@openssh.com", "ecdsa-sha2-nistp521-cert-v01@openssh.com",
      "ecdsa-sha2-nistp384-cert-v01@openssh.com", "ecdsa-sha2-nistp256-cert-v01@openssh.com",
      "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com", "rsa-sha2-512-cert-v01@openssh.com",
      "rsa-sha2-256-cert-v01@openssh.com", "ssh-ed25519", "ecdsa-sha2-nistp521", "ecdsa-sha2-nistp384",
      "ecdsa-sha2-nistp256", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
      "rsa-sha2-512", "rsa-sha2-256",
    },
  },
}
M.LIBSSH = LIBSSH

local function split_commas(s)
  local out = {}
  for part in s:gmatch("[^,]+") do out[#out + 1] = part end
  return out
end

local pattern_cache = setmetatable({}, { __mode = "k" })
local n_patterns = 0

--- Converts an ssh_config glob (* and ?) to a Lua pattern anchored at both ends (remembered: a
--- config's patterns are matched again for every host). Runs of * are one *.
local function glob_to_pattern(g)
  local p = pattern_cache[g]
  if p then return p end
  p = "^" .. g:gsub("%*+", "*"):gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*", ".*"):gsub("%?", ".") .. "$"
  n_patterns = n_patterns + 1
  if n_patterns > 100000 then pattern_cache, n_patterns = setmetatable({}, { __mode = "k" }), 0 end
  pattern_cache[g] = p
  return p
end

-- a, then the names of b that a does not have
local function names_cat(a, b)
  local out, seen = {}, {}
  for _, list in ipairs { a, b } do
    for _, n in ipairs(list) do
      if not seen[n] then seen[n], out[#out + 1] = true, n end
    end
  end
  return out
end

-- OpenSSH's match_pattern_list == 1: some pattern (of a list) matches and no negated one does
local function matches_any(name, patterns)
  local matched = false
  for _, p in ipairs(patterns) do
    local negate = p:sub(1, 1) == "!"
    if name:match(glob_to_pattern(negate and p:sub(2) or p)) then
      if negate then return false end
      matched = true
    end
  end
  return matched
end

--- The algorithm list a value means, OpenSSH's way (+ appends to the defaults, - removes the
--- names matching its patterns, ^ puts them first; a plain list is taken as it is, its patterns
--- expanded): a comma-separated string, or nil and ssh's message for a bad one. base: "openssh"
--- (ssh_config, as ssh -G prints) or "libssh" (spec fields: libssh's defaults and names).
function M.algorithms(key, value, base)
  local a = ALGS[key]
  local src = base == "libssh" and LIBSSH[key] or a
  local def, all = split_commas(src.default), split_commas(src.all)
  local first = value:sub(1, 1)
  local body = (first == "+" or first == "-" or first == "^") and value:sub(2) or value
  if (first == "+" or first == "^") and body == "" then return nil, a.bad:format(value) end
  -- every name must be known (the - list is only a filter; ssh's check stops at an empty
  -- element); wildcards only where ssh takes them
  if first ~= "-" then
    local names = {}
    for part in (body .. ","):gmatch("([^,]*),") do
      if part == "" then break end
      names[#names + 1] = part
    end
    for _, n in ipairs(names) do
      local known = false
      if (a.wild or base == "libssh") and n:find("[%*%?]") then
        known = true
      else
        for _, x in ipairs(all) do if x == n then known = true break end end
      end
      if not known then
        if base == "libssh" then return nil, ("%s is not an algorithm libssh supports (%s)"):format(n, src.all) end
        return nil, a.bad:format(value)
      end
    end
  end
  local list
  if first == "-" then
    local deny, out = split_commas(body), {}
    for _, n in ipairs(def) do
      if not matches_any(n, deny) then out[#out + 1] = n end
    end
    return table.concat(out, ",")
  elseif first == "+" then
    list = names_cat(def, split_commas(body))
  elseif first == "^" then
    list = names_cat(split_commas(body), def)
  else
    list = split_commas(body)
  end
  local out = {}
  for _, p in ipairs(list) do
    local matching = {}
    for _, n in ipairs(all) do
      if n:match(glob_to_pattern(p)) then matching[#matching + 1] = n end
    end
    out = names_cat(out, matching)
  end
  if #out == 0 then return nil, a.bad:format(value) end
  return table.concat(out, ",")
end

--- An OpenSSH list without the names libssh 0.10 lacks: the list, and the names left out.
function M.for_libssh(key, list)
  local have = {}
  for _, n in ipairs(split_commas(LIBSSH[key].all)) do have[n] = true end
  local keep, dropped = {}, {}
  for _, n in ipairs(split_commas(list)) do
    if have[n] then keep[#keep + 1] = n else dropped[#dropped + 1] = n end
  end
  return table.concat(keep, ","), dropped
end

---------------------------------------------------------------------------------------------------
-- Lines

local function is_blank(c) return c == 32 or c == 9 end

--- Splits arguments as ssh does (argv_split): blanks separate, ' and " quote (also inside a
--- word), a backslash escapes a quote, a backslash or (unquoted) a blank, and an unquoted word
--- starting with # ends the line. A list, or nil and a message.
local function split_args(s)
  local out, i, n = {}, 1, #s
  while i <= n do
    local c = s:byte(i)
    if is_blank(c) then
      i = i + 1
    elseif c == 35 then -- '#': a comment
      break
    else
      local buf, quote = {}, nil
      while i <= n do
        c = s:byte(i)
        local nx = s:byte(i + 1)
        if c == 92 and (nx == 39 or nx == 34 or nx == 92 or (not quote and nx == 32)) then
          buf[#buf + 1] = string.char(nx)
          i = i + 2
        elseif not quote and is_blank(c) then
          break
        elseif not quote and (c == 34 or c == 39) then
          quote = c
          i = i + 1
        elseif quote and c == quote then
          quote = nil
          i = i + 1
        else
          -- a run of plain bytes at once (a long line stays linear)
          local j = i
          while j <= n do
            local d = s:byte(j)
            if d == 92 or d == 34 or d == 39 or (not quote and is_blank(d)) then break end
            j = j + 1
          end
          if j == i then
            buf[#buf + 1] = string.char(c)
            j = i + 1
          else
            buf[#buf + 1] = s:sub(i, j - 1)
          end
          i = j
        end
      end
      if quote then return nil, "invalid quotes" end
      out[#out + 1] = table.concat(buf)
    end
  end
  return out
end
M.split_args = split_args

--- Splits as ssh's strdelim does (Match lines): blanks or one '=' separate, "..." quotes.
local function split_delim(s)
  local out, i, n = {}, 1, #s
  while i <= n do
    local a = s:find("[^ \t\r\n=]", i)
    if not a then break end
    if s:byte(a) == 34 then
      local b = s:find('"', a + 1, true)
      if not b then break end -- strdelim: the line ends there
      if b == a + 1 then break end -- an empty word ends it too
      out[#out + 1] = s:sub(a + 1, b - 1)
      i = b + 1
    else
      local b = s:find('[ \t\r\n="]', a) or n + 1
      out[#out + 1] = s:sub(a, b - 1)
      i = b
    end
  end
  return out
end

--- s without leading and trailing white space, in linear time (a pattern like "%s+$" is
--- quadratic on a long run of spaces inside the line).
local function trim(s)
  local a = s:find("[^ \t\r\n]")
  if not a then return "" end
  local b = #s
  while b > a do
    local c = s:byte(b)
    if c ~= 32 and c ~= 9 and c ~= 13 and c ~= 10 and c ~= 12 then break end
    b = b - 1
  end
  return s:sub(a, b)
end
M.trim = trim

-- keywords whose value is the rest of the line as written (quotes and all)
local RAW = { proxycommand = true, localcommand = true, remotecommand = true, knownhostscommand = true,
  proxyjump = true }

--- Splits one line into its keyword and arguments: key (lowercase), args, the keyword as
--- written, the rest of the line as written; nil, message for bad quotes; nil for a blank line
--- or a comment.
function M.tokenize(line)
  line = trim(line)
  if line == "" or line:sub(1, 1) == "#" then return nil end
  local kend = line:find('[ \t\r\n="]') or #line + 1
  local word = line:sub(1, kend - 1)
  if line:byte(kend) == 34 then -- as ssh's strdelim: a quoted part of the keyword
    local q = line:find('"', kend + 1, true)
    if not q then return nil, "invalid quotes" end
    word = word .. line:sub(kend + 1, q - 1)
    kend = q + 1
  end
  local rest = line:sub(kend)
  local a = rest:find("[^ \t\r\n]") or #rest + 1
  if rest:byte(a) == 61 then -- one '='
    a = rest:find("[^ \t\r\n]", a + 1) or #rest + 1
  end
  rest = rest:sub(a)
  local key = word:lower()
  local args, err
  if key == "match" then
    local _, qerr = split_args(rest)
    if qerr then return nil, qerr end
    args, err = split_delim(rest)
  elseif RAW[key] then
    local _, qerr = split_args(rest) -- ssh checks the quotes of every line
    if qerr then return nil, qerr end
    rest = rest:match("^[ \t\r\n=]*(.*)$") -- every blank and '=' before the value, as ssh
    args = { rest }
  else
    args, err = split_args(rest)
  end
  if not args then return nil, err end
  return key, args, word, rest
end
local file_cache = {} -- path -> its lines (parse_lines); M.flush() forgets them
local glob_cache = {} -- Include pattern -> the files it named (M.glob)

--- The lines of a config text: {n=, key=, args=, word=, rest=} (or {n=, bad=} for bad quotes).
local function parse_lines(text, path)
  local lines, n = {}, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    local key, args, word, rest = M.tokenize(line)
    local where = ("%s line %d"):format(path, n)
    if key then
      lines[#lines + 1] = { n = n, key = key, args = args, word = word, rest = rest, where = where }
    elseif args then
      lines[#lines + 1] = { n = n, bad = args, where = where }
    end
  end
  return lines
end

--- The lines of a config file (cached by path for this process), or nil, message.
local function read_lines(path)
  local c = file_cache[path]
  if c ~= nil then return c end
  local f, err = io.open(path, "r")
  if not f then return false, err end -- not kept: it may appear
  local text = f:read("a")
  f:close()
  local lines = parse_lines(text or "", path) -- a directory reads as empty, as with ssh
  file_cache[path] = lines
  return lines
end

--- Forgets the files read so far (they are read again at the next lookup).
function M.flush()
  file_cache = {}
  glob_cache = {}
end

--- Takes text as the content of the config file `path` (instead of reading it): for tests and
--- fuzzing.
function M.set_text(path, text) file_cache[path] = parse_lines(text, path) end

---------------------------------------------------------------------------------------------------
-- Tokens

local function local_info()
  local li = core.local_info()
  li.short = li.hostname:match("^[^.]*")
  return li
end

--- "~" and "~/x" (the user's home from the password database, as ssh), "~user/x".
local function tilde(p, li)
  if p == "~" or p:sub(1, 2) == "~/" then return li.home .. p:sub(2) end
  local user, rest = p:match("^~([^/]+)(.*)$")
  if user then
    local h = core.user_home(user)
    if not h then return nil, "unknown user " .. user end
    return h .. rest
  end
  return p
end
M.tilde = tilde

--- %-tokens of s from t (a table letter -> value); nil, message for a token t does not have.
local function percent(s, t)
  local bad
  local out = s:gsub("%%(.?)", function(c)
    if c == "%" then return "%" end
    if c == "" then bad = bad or "" return "" end
    local v = t[c]
    if v == nil then bad = bad or c return "" end
    return v
  end)
  if bad == "" then return nil, "invalid format (a lone %)" end
  if bad then return nil, ("unknown key %%%s"):format(bad) end
  return out
end


-- The tokens of a host being configured: ctx holds the original name, options so far.
local function tokens(ctx, hostname)
  local li = ctx.li
  local o = ctx.o
  local port = o.port and o.port[1] or "22"
  local user = o.user and o.user[1] or li.user
  local t = {
    h = hostname, n = ctx.original, p = port, r = user, u = li.user, d = li.home,
    i = tostring(li.uid), l = li.hostname, L = li.short,
    k = o.hostkeyalias and o.hostkeyalias[1]:lower() or ctx.original,
  }
  t.C = core.sha1_hex(li.hostname .. hostname .. port .. user)
  return t
end

--- %-tokens and ${ENV} in one pass, as ssh's percent_dollar_expand (an environment value is
--- never read again for tokens): the string, or nil and ssh's message.
local function percent_dollar(s, t)
  local out, i, n = {}, 1, #s
  while i <= n do
    local j = s:find("[%%$]", i)
    if not j then
      out[#out + 1] = s:sub(i)
      break
    end
    out[#out + 1] = s:sub(i, j - 1)
    local c = s:sub(j, j)
    if c == "$" and s:sub(j + 1, j + 1) == "{" then
      local close = s:find("}", j + 2, true)
      if not close then return nil, ("environment variable '%s' missing closing '}'"):format(s:sub(j)) end
      local name = s:sub(j + 2, close - 1)
      if name == "" then return nil, "zero-length environment variable" end
      local v = os.getenv(name)
      if v == nil then return nil, ("env var ${%s} has no value"):format(name) end
      out[#out + 1] = v
      i = close + 1
    elseif c == "$" then
      out[#out + 1] = "$"
      i = j + 1
    else
      local k = s:sub(j + 1, j + 1)
      if k == "" then return nil, "invalid format (a lone %)" end
      if k == "%" then
        out[#out + 1] = "%"
      elseif t[k] == nil then
        return nil, ("unknown key %%%s"):format(k)
      else
        out[#out + 1] = t[k]
      end
      i = j + 2
    end
  end
  return table.concat(out)
end

--- A path value as ssh expands it: ~, then %-tokens and ${ENV} (per ssh_config(5) TOKENS).
local function expand_path(s, t, li)
  local v, err = tilde(s, li)
  if not v then return nil, err end
  return percent_dollar(v, t)
end

---------------------------------------------------------------------------------------------------
-- Matching

local function glob_match(name, p) return name:match(glob_to_pattern(p)) ~= nil end

--- Whether name matches an ssh pattern list (comma-separated; * ?; a matching negated pattern
--- fails the whole list; only negations never match). lower: compare case-insensitively.
local function pattern_list_matches(list, name, lower)
  if lower then list, name = list:lower(), name:lower() end
  return matches_any(name, split_commas(list))
end

--- Whether a Host line's patterns (each an argument; case-sensitive, as ssh) take name.
local function host_line_matches(patterns, name)
  local matched = false
  for _, p in ipairs(patterns) do
    local negate = p:sub(1, 1) == "!"
    if negate then p = p:sub(2) end
    local hit
    if p:find("[%*%?]") then hit = glob_match(name, p) else hit = p == name end -- most are names
    if hit then
      if negate then return false end
      matched = true
    end
  end
  return matched
end
M.host_matches = host_line_matches

-- The host Match host compares: the HostName obtained so far (its %h expanded), else the name.
local function match_host(ctx)
  if ctx.final then return ctx.o.hostname[1] end
  local hn = ctx.o.hostname
  if hn then return (percent(hn[1], { h = ctx.original }) or hn[1]) end
  return ctx.host
end

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Runs a Match exec command as ssh does: $SHELL -c, stdin and stdout /dev/null. true/false, or
-- nil when it died of a signal.
local function run_exec(cmd)
  local shell = os.getenv("SHELL")
  if not shell or shell == "" then shell = "/bin/sh" end
  local ok, how = os.execute("exec " .. shell_quote(shell) .. " -c " .. shell_quote(cmd) .. " </dev/null >/dev/null")
  if how == "signal" then return nil end
  return ok == true
end

local ARGLESS = { all = true, canonical = true, final = true }
local CRITERIA = { host = true, originalhost = true, user = true, localuser = true, exec = true }

-- Whether a Match line applies: true/false, or nil and ssh's message.
local function match_line(ctx, args, where)
  local result, attributes, i = true, 0, 1
  local function bad(msg) return nil, msg .. "\n" .. where .. ": Bad Match condition" end
  while i <= #args do
    local attr = args[i]
    if attr:sub(1, 1) == "#" then break end
    local negate = attr:sub(1, 1) == "!"
    local a = (negate and attr:sub(2) or attr):lower()
    if a == "all" then
      local nxt = args[i + 1]
      if attributes > 1 or (nxt and nxt ~= "" and nxt:sub(1, 1) ~= "#") then
        return bad(("%s: '%s' cannot be combined with other Match attributes"):format(where, attr))
      end
      if result then result = not negate end
      return result
    end
    attributes = attributes + 1
    if ARGLESS[a] then
      if a == "final" then ctx.want_final = true end
      if ctx.final == negate then result = false end
      i = i + 1
    else
      local arg = args[i + 1]
      if arg == nil or arg == "" or arg:sub(1, 1) == "#" then
        return bad("Missing Match criteria for " .. (negate and attr:sub(2) or attr))
      end
      if not CRITERIA[a] then return bad("Unsupported Match attribute " .. (negate and attr:sub(2) or attr)) end
      local r
      if a == "host" then
        r = pattern_list_matches(arg, match_host(ctx), true)
      elseif a == "originalhost" then
        r = pattern_list_matches(arg, ctx.original, true)
      elseif a == "user" then
        r = pattern_list_matches(arg, ctx.o.user and ctx.o.user[1] or ctx.li.user, false)
      elseif a == "localuser" then
        r = pattern_list_matches(arg, ctx.li.user, false)
      else -- exec: skipped once the line cannot match any more, as ssh does
        local h = match_host(ctx)
        local li, o = ctx.li, ctx.o
        local port = o.port and o.port[1] or "22"
        local ruser = o.user and o.user[1] or li.user
        local cmd, err = percent(arg, { C = core.sha1_hex(li.hostname .. h .. port .. ruser), L = li.short,
          d = li.home, h = h, k = o.hostkeyalias and o.hostkeyalias[1] or h, l = li.hostname,
          n = ctx.original, p = port, r = ruser, u = li.user, i = tostring(li.uid) })
        if not cmd then return bad(("%s: %s in Match exec"):format(where, err)) end
        if result and ctx.no_exec then
          r = false -- (opts.exec = false: a fuzzer's config runs nothing)
        elseif result then
          r = run_exec(cmd)
          if r == nil then return nil, ("%s: match exec '%s' error (it was killed by a signal)"):format(where, cmd) end
        end
      end
      if r ~= nil and r == negate then result = false end
      i = i + 2
    end
  end
  if attributes == 0 then return bad("One or more attributes required for Match") end
  return result
end

---------------------------------------------------------------------------------------------------
-- Evaluation, as readconf.c's pass over the files

local YESNO = { yes = "yes", no = "no", ["true"] = "yes", ["false"] = "no" }
local HOSTKEY_CHECK = { yes = "true", ["true"] = "true", no = "false", ["false"] = "false", off = "false",
  ask = "ask", ["accept-new"] = "accept-new" }

--- A time as ssh's convtime reads it ("90", "1m30s", "1h"): seconds, or nil.
local function convtime(v)
  if v:match("^%d+$") then
    local n = tonumber(v)
    return n <= 2147483647 and math.tointeger(n) or nil
  end
  local total, pos = 0, 1
  local mult = { s = 1, m = 60, h = 3600, d = 86400, w = 604800 }
  while pos <= #v do
    local num, unit, e = v:match("^(%d+)([smhdwSMHDW]?)()", pos)
    if not num then return nil end
    total = total + tonumber(num) * mult[(unit ~= "" and unit or "s"):lower()]
    pos = e
  end
  if total > 2147483647 then return nil end
  return total
end

--- A port as ssh's a2port reads it (a number from 1 to 65535, or a service name): the number,
--- or nil.
function M.port_number(v)
  local n = v:match("^[ \t]*%+?%d+$") and tonumber((v:gsub("[ \t+]", "")))
  if not n and v:match("^[%w%-]+$") then n = core.service_port(v) end
  if not n or n < 1 or n > 65535 then return nil end
  return math.tointeger(n)
end

local function is_addr(h)
  return h:find("[:%%]") ~= nil or h:match("^[%d%.]+$") ~= nil or core.numeric_host(h) ~= nil
end

--- Parses a ProxyJump value as ssh does: the hops as written, the last one split into user,
--- host and port; or nil. Debian's ssh takes the value up to its first blank.
local function parse_jump(v)
  if v:lower() == "none" then return { none = true } end -- the value as written, as ssh
  v = v:match("^[^#]*"):match("^[^ \t]*")
  local hops = {}
  for part in (v .. ","):gmatch("([^,]*),") do hops[#hops + 1] = part end
  if #hops == 0 then return nil end
  local parsed = {}
  for i, h in ipairs(hops) do
    local user, host, port
    local uri = h:match("^ssh://(.*)$")
    local body = uri or h
    if uri then body = body:gsub("/$", "") end
    if uri and body:find("/") then return nil end
    user, host = body:match("^(.*)@([^@]*)$")
    if not user then host = body end
    if user == "" then return nil end
    local bracketed, p = host:match("^%[(.-)%]:?(%d*)$")
    if bracketed then
      host, port = bracketed, p
    else
      local hh, pp = host:match("^([^:]+):([%w%-]*)$")
      if hh then host, port = hh, pp elseif host:find(":") then return nil end
    end
    if host == "" then return nil end
    if port == "" then port = nil end
    if port then
      port = M.port_number(port)
      if not port then return nil end
      port = tostring(port)
    end
    parsed[i] = { user = user, host = host, port = port, text = h }
  end
  local last = parsed[#parsed]
  local extra = #hops > 1 and v:sub(1, #v - #hops[#hops] - 1) or nil
  return { hops = parsed, last = last, extra = extra }
end

--- How ssh -G prints a parsed ProxyJump.
local function jump_text(j)
  local h = j.last.host
  if h:find(":") or h:match("^[%d%.]+$") then h = "[" .. h .. "]" end
  return (j.extra and j.extra .. "," or "") .. (j.last.user and j.last.user .. "@" or "") .. h
    .. (j.last.port and ":" .. tonumber(j.last.port) or "")
end

-- The values ssh takes for keywords sshchain only says (checked all the same, as ssh does).
local FLAG = { yes = 1, no = 1, ["true"] = 1, ["false"] = 1 }
local function states(...)
  local t = { yes = 1, no = 1, ["true"] = 1, ["false"] = 1 }
  for _, v in ipairs { ... } do t[v] = 1 end
  return t
end
local VALUES = {
  controlmaster = states("ask", "auto", "autoask"), requesttty = states("force", "auto"),
  pubkeyauthentication = states("unbound", "host-bound"), canonicalizehostname = states("always"),
  verifyhostkeydns = states("ask"), updatehostkeys = states("ask"),
  tunnel = states("point-to-point", "ethernet"),
  addressfamily = { any = 1, inet = 1, inet6 = 1 }, sessiontype = { none = 1, subsystem = 1, default = 1 },
}
for _, k in ipairs { "forwardx11", "forwardx11trusted", "exitonforwardfailure", "gatewayports",
  "passwordauthentication", "kbdinteractiveauthentication", "hostbasedauthentication", "checkhostip",
  "compression", "tcpkeepalive", "clearallforwardings", "enablesshkeysign", "nohostauthenticationforlocalhost",
  "permitlocalcommand", "visualhostkey", "streamlocalbindunlink", "forkafterauthentication", "stdinnull",
  "proxyusefdpass", "gssapiauthentication", "gssapidelegatecredentials", "gssapikeyexchange", "gssapitrustdns",
  "gssapirenewalforcesrekey", "canonicalizefallbacklocal", "enableescapecommandline" } do
  VALUES[k] = FLAG
end
local INTEGER = { connectionattempts = true, numberofpasswordprompts = true, canonicalizemaxdots = true,
  requiredrsasize = true }
local LOGLEVELS = { quiet = 1, fatal = 1, error = 1, info = 1, verbose = 1, debug = 1, debug1 = 1, debug2 = 1,
  debug3 = 1 }

-- Checks a value of a keyword sshchain reads (ssh checks these on every line, applying or not):
-- the value to store, or nil and ssh's message.
local function check_value(key, args, where)
  local v = args[1]
  if VALUES[key] then
    if not VALUES[key][v:lower()] then return nil, ('%s: unsupported option "%s".'):format(where, v) end
    return args
  elseif INTEGER[key] then
    if not v:match("^%d+$") then return nil, ("%s: integer value invalid."):format(where) end
    return args
  elseif key == "controlpersist" then -- no/false, yes/true, or a time (0: for ever)
    local l = v:lower()
    if not (FLAG[l] or convtime(v)) then return nil, ("%s: Bad ControlPersist argument."):format(where) end
    return args
  elseif key == "forwardx11timeout" then
    if v ~= "none" and not convtime(v) then return nil, ("%s: invalid time value."):format(where) end
    return args
  elseif key == "loglevel" then
    if not LOGLEVELS[v:lower()] then return nil, ("%s: unsupported log level '%s'"):format(where, v) end
    return args
  elseif key == "fingerprinthash" then
    if v:lower() ~= "md5" and v:lower() ~= "sha256" then
      return nil, ('%s: Invalid hash algorithm "%s".'):format(where, v)
    end
    return args
  end
  if key == "port" then
    local n = M.port_number(v)
    if not n then return nil, ("%s: Bad port '%s'."):format(where, v) end
    return { tostring(n) }
  elseif key == "identitiesonly" or key == "batchmode" or key == "hashknownhosts" then
    local x = YESNO[v:lower()]
    if not x then return nil, ("%s: unsupported option \"%s\"."):format(where, v) end
    return { x }
  elseif key == "stricthostkeychecking" then
    local x = HOSTKEY_CHECK[v:lower()]
    if not x then return nil, ("%s: unsupported option \"%s\"."):format(where, v) end
    return { x }
  elseif key == "connecttimeout" or key == "serveraliveinterval" then
    if v == "none" then return false end -- unset: a later line may still set it
    local n = convtime(v)
    if not n then return nil, ("%s: invalid time value."):format(where) end
    return { tostring(n) }
  elseif key == "serveralivecountmax" then
    if not v:match("^%d+$") then return nil, ("%s: integer value invalid."):format(where) end
    if tonumber(v) > 2147483647 then return nil, ("%s: integer value too large."):format(where) end
    return { tostring(tonumber(v)) }
  elseif ALGS[key] then
    local ok, err = M.algorithms(key, v)
    if not ok then return nil, ("%s: %s"):format(where, err) end
  elseif key == "proxyjump" then
    local j = parse_jump(v)
    if not j then return nil, ("%s: Invalid ProxyJump \"%s\""):format(where, v) end
    return { v, parsed = j }
  elseif key == "userknownhostsfile" or key == "globalknownhostsfile" then
    for _, a in ipairs(args) do
      if a == "" then return nil, ("%s: keyword %s empty argument"):format(where, key) end
      if #args > 1 and a:lower() == "none" then
        return nil, ('%s: keyword %s "none" argument must appear alone.'):format(where, key)
      end
    end
  elseif key == "identityagent" or (key == "forwardagent" and not YESNO[v:lower()]) then
    local name = v:match("^%$([^{].*)$")
    if name and not name:match("^[%w_]+$") then return nil, ("%s: Invalid environment name %s."):format(where, v) end
    if v ~= "none" and v ~= "SSH_AUTH_SOCK" and not name then
      local _, err = percent_dollar((v:gsub("%%", "")), {})
      if err then return nil, ("%s: Invalid environment expansion %s."):format(where, v) end
    end
  end
  return args
end

local function store(ctx, key, args, where)
  local o = ctx.o
  if MULTI[key] then
    o[key] = o[key] or {}
    ctx.seen[key] = ctx.seen[key] or {}
    for _, a in ipairs(key == "sendenv" and args or { table.concat(args, " ") }) do
      if key == "sendenv" and a:sub(1, 1) == "-" then -- takes names out again, as ssh
        local keep = {}
        for _, x in ipairs(o[key]) do
          if not x:match(glob_to_pattern(a:sub(2))) then keep[#keep + 1] = x end
        end
        o[key] = keep
      elseif key == "sendenv" or not ctx.seen[key][a] then -- one of each file, as ssh
        ctx.seen[key][a] = true
        o[key][#o[key] + 1] = a
        if #o[key] > 100 and (key == "identityfile" or key == "certificatefile") then
          return ("Too many %s files specified (max 100)."):format(key == "identityfile" and "identity" or "certificate")
        end
      end
    end
    ctx.where[key] = ctx.where[key] or {}
    ctx.where[key][#ctx.where[key] + 1] = where
    return
  end
  if key == "proxyjump" then
    if args.parsed.none then
      if not o.proxyjump and not o.proxycommand and not ctx.jump_none then ctx.jump_none = where end
      return
    end
    if o.proxyjump or o.proxycommand or ctx.jump_none then return end
  elseif key == "proxycommand" then
    if o.proxyjump or o.proxycommand then return end
  elseif key == "forwardagent" then
    local yn = YESNO[args[1]:lower()]
    if yn then
      if not o.forwardagent_flag then o.forwardagent_flag = yn end
    else
      if not o.forwardagent_flag then o.forwardagent_flag = "yes" end
      if not o.forwardagent then o.forwardagent, ctx.where.forwardagent = args, where end
    end
    return
  end
  if o[key] == nil then
    o[key] = args
    ctx.where[key] = where
  end
end

local eval_file

--- The files a glob names, sorted (the shell expands it, once per process: M.flush() forgets);
--- a path without * ? [ is itself. nil: an empty list.
function M.glob(p)
  if not p then return {} end
  if not p:find("[%*%?%[]") then return { p } end
  local list = glob_cache[p]
  if list then return list end
  list = {}
  local pipe = io.popen("for f in " .. p:gsub("([^%w%*%?%[%]/%._%-])", "\\%1")
    .. "; do [ -e \"$f\" ] && printf '%s\\n' \"$f\"; done 2>/dev/null")
  if pipe then
    for line in pipe:lines() do list[#list + 1] = line end
    pipe:close()
  end
  table.sort(list)
  glob_cache[p] = list
  return list
end

local function include(ctx, args, active, nevermatch, depth, where)
  if depth >= 16 then return nil, "Too many recursive configuration includes (" .. where .. ": a loop?)" end
  for _, a in ipairs(args) do
    local p = a
    if p:sub(1, 1) == "~" and ctx.system then return nil, ("%s: bad include path %s."):format(where, a) end
    if p:sub(1, 1) ~= "/" and p:sub(1, 1) ~= "~" then p = (ctx.system and "/etc/ssh/" or "~/.ssh/") .. p end
    local list = M.glob(tilde(p, ctx.li)) -- ~nosuchuser: matches nothing, as ssh's glob
    for _, f in ipairs(list) do
      local lines, rerr = read_lines(f)
      if lines then
        local ok, ierr = eval_file(ctx, f, lines, active, nevermatch or not active, depth + 1)
        if not ok then return nil, ierr end
      elseif rerr and not rerr:find("No such file") then -- a missing file is no error, as with ssh
        return nil, ("Can't open user config file %s: %s"):format(f, rerr:gsub("^[^:]*: ", ""))
      end
    end
  end
  return true
end

-- Whether a line can be passed over when its block does not apply: a known keyword with a value
-- ssh takes, that would say nothing (no error, no note, no include).
local function plain_line(l)
  if l.bad or l.rest == "" then return false end
  local key = ALIAS[l.key] or l.key
  local kind = KIND[key]
  if not kind or kind == "unsupported" or key == "include" or key == "host" or key == "match" then return false end
  if kind == "deprecated" then return true end
  if (not MANY[key] and #l.args > 1) or #l.args == 0 or (l.args[1] == "" and key ~= "proxycommand") then
    return false
  end
  if l.checked == nil then l.checked, l.check_err = check_value(key, l.args, l.where) end
  return l.checked ~= nil
end

-- Marks each Host and Match line with where its block ends and whether the block is plain (then
-- a host it does not apply to skips it at once: a config of 10,000 Host blocks is read in a
-- time that does not grow with the blocks that do not apply).
--
-- Consecutive plain blocks whose Host lines are names only (no wildcard, no negation) form a
-- run: its first header maps each name to the headers that name it, so a lookup goes straight
-- to the blocks for its host and past the others (10,000 Host blocks cost a table look-up).
local function literal_host(l)
  if l.key ~= "host" or not l.plain_block or #l.args == 0 then return false end
  for _, a in ipairs(l.args) do
    if a == "" or a:find("^!") or a:find("[%*%?]") then return false end
  end
  return true
end

local function index_blocks(lines)
  local header, plain = nil, true
  for i = 1, #lines + 1 do
    local l = lines[i]
    if not l or l.key == "host" or l.key == "match" then
      if header then header.block_end, header.plain_block = i, plain end
      header, plain = l, true
    elseif not plain_line(l) then
      plain = false
    end
  end
  local i = 1
  while i <= #lines do
    local l = lines[i]
    if (l.key == "host" or l.key == "match") and literal_host(l) then
      local map, j = {}, i
      while lines[j] and literal_host(lines[j]) do
        for _, a in ipairs(lines[j].args) do
          local list = map[a]
          if not list then
            list = {}
            map[a] = list
          end
          if list[#list] ~= j then list[#list + 1] = j end
        end
        j = lines[j].block_end
      end
      if j - i > 1 then l.run_map, l.run_end = map, j end
      i = j
    else
      i = (l.key == "host" or l.key == "match") and l.block_end or i + 1
    end
  end
  lines.indexed = true
end

function eval_file(ctx, path, lines, active, nevermatch, depth)
  local bad = {}
  if not lines.indexed then index_blocks(lines) end
  local i = 1
  local hits, hit, run_end -- in a run of name-only Host blocks: the blocks naming this host
  while i <= #lines do
    local l = lines[i]
    if hits and i >= run_end then hits = nil end
    if l.run_map and not hits then -- a run starts: go to its first block for this host, or past it
      hits = not nevermatch and l.run_map[ctx.host]
      if not hits then
        i = l.run_end
        goto next_line
      end
      hit, run_end = 1, l.run_end
      i = hits[1]
      l = lines[i]
    elseif hits and l.key == "host" and i ~= hits[hit] then -- a block for this host ended
      hit = hit + 1
      if hits[hit] then
        i = hits[hit]
        l = lines[i]
      else
        i, hits = run_end, nil
        goto next_line
      end
    end
    i = i + 1
    do
    local where = l.where
    local key = l.key and (ALIAS[l.key] or l.key)
    local kind = key and KIND[key]
    local err
    if l.bad then
      err = ("%s: invalid quotes"):format(where)
    elseif l.rest == "" then
      err = ('%s: no argument after keyword "%s"'):format(where, l.key)
    elseif not kind then
      local ign = ctx.o.ignoreunknown
      if not (ign and pattern_list_matches(ign[1], l.key, true)) then
        err = ("%s: line %d: Bad configuration option: %s"):format(path, l.n, l.key)
      end
    elseif key == "host" then
      for _, a in ipairs(l.args) do
        if a == "" then err = ("%s: keyword host empty argument"):format(where) end
      end
      active = not nevermatch and host_line_matches(l.args, ctx.host)
      if not active and not err and l.plain_block then i = l.block_end end
    elseif key == "match" then
      local r, merr = match_line(ctx, l.args, where)
      if r == nil then
        err = merr
      else
        active = not nevermatch and r
        if not active and l.plain_block then i = l.block_end end
      end
    elseif key == "include" then
      if not ctx.no_include then -- (opts.include = false: not followed)
        local saved = active
        local ok, ierr = include(ctx, l.args, active, nevermatch, depth, where)
        if not ok then return nil, ierr end
        active = saved
      end
    elseif kind == "unsupported" then
      ctx.note(('Unsupported option "%s"'):format(l.key), where, true)
    elseif kind ~= "deprecated" then -- a deprecated keyword is ignored without a word, as ssh
      if not MANY[key] and #l.args > 1 then
        err = ("%s: keyword %s extra arguments at end of line"):format(where, l.key)
      elseif #l.args == 0 or (l.args[1] == "" and key ~= "proxycommand") then
        err = ("%s: Missing argument."):format(where)
      else
        -- the check depends on the line alone: done once per file read
        if l.checked == nil then l.checked, l.check_err = check_value(key, l.args, where) end
        local value, verr = l.checked, l.check_err
        if value == nil then
          err = verr
        elseif value and active then
          if kind == "known" then
            local noop = NOOP[key]
            if not (noop == true or (noop and YESNO[l.args[1]:lower()] or l.args[1]:lower()) == noop) then
              ctx.note(l.word, where)
            end
          end
          local serr = store(ctx, key, value, where)
          if serr then return nil, where .. ": " .. serr end
        end
      end
    end
    if err then bad[#bad + 1] = err end
    end
    ::next_line::
  end
  if #bad > 0 then
    bad[#bad + 1] = ("%s: terminating, %d bad configuration options"):format(path, #bad)
    return nil, table.concat(bad, "\n")
  end
  return true
end

---------------------------------------------------------------------------------------------------
-- Keywords sshchain does not implement are said once per process (per keyword), on stderr
-- unless replaced.

local said = {}

--- Called with (keyword, "file line N") for a keyword OpenSSH knows that sshchain does not
--- implement, once per keyword; replace it to route or silence the message.
function M.on_unsupported(keyword, where)
  io.stderr:write(("sshchain: %s: %s is not supported by sshchain; ignored\n"):format(where, keyword))
end

local function note_once(keyword, where)
  local k = keyword:lower()
  if said[k] then return end
  said[k] = true
  M.on_unsupported(keyword, where)
end

---------------------------------------------------------------------------------------------------
-- The effective configuration

local DEFAULT_IDENTITIES = { "~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ecdsa_sk", "~/.ssh/id_ed25519",
  "~/.ssh/id_ed25519_sk", "~/.ssh/id_xmss", "~/.ssh/id_dsa" }
M.DEFAULT_IDENTITIES = DEFAULT_IDENTITIES

local function files_of(opts, li)
  if opts.config then return { { path = opts.config, system = false, required = true } } end
  return {
    { path = li.home .. "/.ssh/config", system = false },
    { path = opts.system_config or "/etc/ssh/ssh_config", system = true },
  }
end

local function pass(ctx, files)
  for _, f in ipairs(files) do
    local lines, err = read_lines(f.path)
    if not lines then
      if f.required and err then
        return nil, ("Can't open user config file %s: %s"):format(f.path, (err:gsub("^.-: ", "")))
      end
    else
      ctx.system = f.system
      local ok, eerr = eval_file(ctx, f.path, lines, true, false, 0)
      if not ok then return nil, eerr end
    end
  end
  return true
end

--- effective(name [, {config=PATH, user=, port=, system_config=, exec=false, include=false}]) -> the effective client
--- configuration of a host as `ssh -G` computes it: a table keyword -> value (strings; lists for
--- multi-valued keywords), plus `_where` (keyword -> "file line N"); or nil, message.
--- opts.user / opts.port stand for ssh's -l / -p (they come before any file).
function M.effective(name, opts)
  opts = opts or {}
  local li = local_info()
  local pending = {}
  local ctx = { li = li, original = name, host = name, o = {}, where = {}, final = false, seen = {},
    no_exec = opts.exec == false, no_include = opts.include == false }
  ctx.note = function(keyword, where) pending[#pending + 1] = { keyword, where } end
  if opts.user then ctx.o.user = { opts.user } end
  if opts.port then ctx.o.port = { tostring(opts.port) } end
  local files = files_of(opts, li)
  local ok, err = pass(ctx, files)
  if not ok then return nil, err end
  -- HostName's %h (lowercased unless an address), then a second pass when a Match final asked
  local o = ctx.o
  local host = name
  if o.hostname then
    local h, herr = percent(o.hostname[1], { h = name })
    if not h then return nil, ("%s: %s in hostname"):format(ctx.where.hostname, herr) end
    host = h
  end
  if not is_addr(host) then
    host = host:lower()
  else -- an address is printed in its canonical form, as ssh does (127.1: 127.0.0.1)
    local canonical = core.numeric_host(host)
    if canonical and canonical:lower() ~= host:lower() then host = canonical end
  end
  local ch = o.canonicalizehostname and o.canonicalizehostname[1]:lower()
  local canon = ch == "yes" or ch == "always"
  if ctx.want_final or canon then -- ssh's final pass (canonicalization itself is not done)
    o.hostname = { host }
    ctx.final, ctx.host = true, host
    ok, err = pass(ctx, files)
    if not ok then return nil, err end
  end
  for _, p in ipairs(pending) do note_once(p[1], p[2]) end
  local e = { host = name, hostname = host, _where = ctx.where, _options = o }
  e.user = o.user and o.user[1] or li.user
  e.port = o.port and o.port[1] or "22"
  local t = tokens(ctx, host)
  e.identityfile = o.identityfile or DEFAULT_IDENTITIES
  e.identityfile_default = o.identityfile == nil
  e.certificatefile = o.certificatefile
  if o.proxyjump then
    e.proxyjump = jump_text(o.proxyjump.parsed)
    e._jump = o.proxyjump.parsed
  elseif o.proxycommand and o.proxycommand[1]:lower() ~= "none" then
    e.proxycommand = o.proxycommand[1]
  end
  local kh = {}
  if o.userknownhostsfile and o.userknownhostsfile[1]:lower() == "none" then
    kh = { "none" }
  else
    for _, p in ipairs(o.userknownhostsfile or { "~/.ssh/known_hosts", "~/.ssh/known_hosts2" }) do
      local v, perr = expand_path(p, t, li)
      if not v then return nil, ("%s: %s in userknownhostsfile"):format(ctx.where.userknownhostsfile, perr) end
      kh[#kh + 1] = v
    end
  end
  e.userknownhostsfile = kh
  e.globalknownhostsfile = o.globalknownhostsfile or { "/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2" }
  if e.globalknownhostsfile[1]:lower() == "none" then e.globalknownhostsfile = { "none" } end
  e.stricthostkeychecking = o.stricthostkeychecking and o.stricthostkeychecking[1] or "ask"
  e.identitiesonly = o.identitiesonly and o.identitiesonly[1] or "no"
  local function agent_path(v, where)
    if v == "none" or v == "SSH_AUTH_SOCK" or v:match("^%$[%w_]+$") then return v end
    local x, aerr = expand_path(v, t, li)
    if not x then return nil, ("%s: %s"):format(where, aerr) end
    return x
  end
  if o.identityagent then
    local v, aerr = agent_path(o.identityagent[1], ctx.where.identityagent)
    if not v then return nil, aerr end
    e.identityagent = v
  end
  e.forwardagent = o.forwardagent_flag or "no"
  e.forwardagent_flag = e.forwardagent
  if o.forwardagent then -- ssh -G shows the socket path whatever the flag says
    local v, aerr = agent_path(o.forwardagent[1], ctx.where.forwardagent)
    if not v then return nil, aerr end
    e.forwardagent = v
  end
  e.connecttimeout = o.connecttimeout and o.connecttimeout[1] or "none"
  e.batchmode = o.batchmode and o.batchmode[1] or "no"
  -- Debian's ssh: BatchMode gives a dead-peer check of 300 s unless one is set
  e.serveraliveinterval = o.serveraliveinterval and o.serveraliveinterval[1]
    or (e.batchmode == "yes" and "300" or "0")
  e.serveralivecountmax = o.serveralivecountmax and o.serveralivecountmax[1] or "3"
  for key in pairs(ALGS) do
    if o[key] then
      e[key] = assert(M.algorithms(key, o[key][1]))
      e[key .. "_set"] = true
    else
      e[key] = ALGS[key].default
    end
  end
  if o.hostkeyalias then e.hostkeyalias = o.hostkeyalias[1]:lower() end
  e.sendenv = o.sendenv
  e._tokens = t
  return e
end

-- ssh -G's order for the keywords sshchain prints
local ORDER = { "host", "user", "hostname", "port", "batchmode", "identitiesonly", "stricthostkeychecking",
  "serveralivecountmax", "serveraliveinterval", "ciphers", "hostkeyalgorithms", "kexalgorithms", "macs",
  "pubkeyacceptedalgorithms", "hostkeyalias", "identityagent", "proxycommand", "identityfile",
  "certificatefile", "globalknownhostsfile", "userknownhostsfile", "sendenv", "forwardagent",
  "connecttimeout", "proxyjump" }

--- The effective configuration as `ssh -G` prints it ("keyword value" lines).
function M.dump(e)
  local out = {}
  for _, k in ipairs(ORDER) do
    local v = e[k]
    if type(v) == "table" then
      if k == "userknownhostsfile" or k == "globalknownhostsfile" then
        out[#out + 1] = k .. " " .. table.concat(v, " ")
      else
        for _, x in ipairs(v) do out[#out + 1] = k .. " " .. x end
      end
    elseif v ~= nil then
      out[#out + 1] = k .. " " .. v
    end
  end
  return table.concat(out, "\n") .. "\n"
end

---------------------------------------------------------------------------------------------------
-- Host specs and chains

local HOSTKEY_MODES = { ["true"] = "strict", ask = "strict", ["accept-new"] = "accept-new", ["false"] = "off" }
local SPEC_ALGS = { kexalgorithms = "kex", hostkeyalgorithms = "hostkeys", ciphers = "ciphers", macs = "macs",
  pubkeyacceptedalgorithms = "pubkeys" }

local specs_module -- sshchain.spec (which needs this module: looked up when first used)
local function specs()
  specs_module = specs_module or require "sshchain.spec"
  return specs_module
end

local function split_target(name)
  if type(name) == "table" then return name.user, name.host, name.port end -- a parsed jump
  return specs().split(name)
end

--- A host spec for `name` (a Host alias or [user@]host[:port], or {user=, host=, port=}) and its
--- ProxyJump hops (a list of such tables; nil when none); or nil, message.
-- Which default identity files exist, looked at again after a second (10,000 hosts looked up in
-- a row do not stat the same seven files 10,000 times).
local exists_seen, exists_at = {}, nil
local function default_exists(path)
  local now = core.now()
  if not exists_at or now - exists_at > 1 then exists_seen, exists_at = {}, now end
  local v = exists_seen[path]
  if v == nil then
    v = specs().file_exists(path)
    exists_seen[path] = v
  end
  return v
end

function M.spec_for(name, opts)
  local user, alias, port = split_target(name)
  local e, err = M.effective(alias, { config = opts and opts.config, system_config = opts and opts.system_config,
    user = user, port = port })
  if not e then return nil, err end
  local li = local_info()
  local t = e._tokens
  local spec = { host = e.hostname, port = tonumber(e.port), user = e.user, name = alias }
  local log = require "sshchain.log"
  if log.level >= 2 then -- which lines applied, one line per file
    local by_file, files = {}, {}
    for k, w in pairs(e._where) do
      for _, x in ipairs(type(w) == "table" and w or { w }) do
        local file, n = x:match("^(.*) line (%d+)$")
        if file then
          if not by_file[file] then by_file[file], files[#files + 1] = {}, file end
          by_file[file][#by_file[file] + 1] = { tonumber(n), k }
        end
      end
    end
    table.sort(files)
    for _, file in ipairs(files) do
      local l = by_file[file]
      table.sort(l, function(a, b) return a[1] < b[1] end)
      local parts = {}
      for _, x in ipairs(l) do parts[#parts + 1] = ("%s (line %d)"):format(x[2], x[1]) end
      log.say(2, "ssh_config " .. alias, "from %s: %s", file, table.concat(parts, ", "))
    end
  end
  if e.user == li.user and not e._options.user and not user then spec.user = nil end
  local ids = {}
  for _, p in ipairs(e.identityfile) do
    if p:lower() ~= "none" then
      local v, perr = expand_path(p, t, li)
      if not v then return nil, ("%s: %s in identityfile"):format(e._where.identityfile and e._where.identityfile[1] or "", perr) end
      -- the default list: only the files there are (ssh skips the rest without a word)
      if not e.identityfile_default or default_exists(v) then ids[#ids + 1] = v end
    end
  end
  if not e.identityfile_default or #ids > 0 then spec.identity = ids end
  if e.certificatefile then
    local certs = {}
    for _, p in ipairs(e.certificatefile) do
      local v, perr = expand_path(p, t, li)
      if not v then return nil, perr end
      certs[#certs + 1] = v
    end
    spec.certificate = certs
  end
  if e._options.userknownhostsfile then
    spec.known_hosts = e.userknownhostsfile[1] == "none" and "/dev/null" or e.userknownhostsfile
  end
  if e._options.globalknownhostsfile then
    local g = {}
    for _, p in ipairs(e.globalknownhostsfile) do
      if p:lower() ~= "none" then g[#g + 1] = tilde(p, li) or p end
    end
    spec.global_known_hosts = #g > 0 and g or "/dev/null"
  end
  if e._options.stricthostkeychecking then spec.host_key = HOSTKEY_MODES[e.stricthostkeychecking] end
  if e.connecttimeout ~= "none" then spec.timeout = tonumber(e.connecttimeout) end
  local k = tonumber(e.serveraliveinterval)
  if k and (k > 0 or e._options.serveraliveinterval) then spec.keepalive = k end -- 0 said: off
  local kc = math.tointeger(tonumber(e.serveralivecountmax))
  if e._options.serveralivecountmax and kc and kc >= 1 then spec.keepalive_count = math.min(kc, 1000) end
  if e.identitiesonly == "yes" then spec.identities_only = true end
  if e.identityagent then
    local v = e.identityagent
    if v == "none" then
      spec.agent = false
    elseif v == "SSH_AUTH_SOCK" then
      spec.agent = true
    elseif v:match("^%$") then
      local env = os.getenv(v:sub(2))
      if env and env ~= "" then spec.agent = env else spec.agent = false end
    else
      spec.agent = v
    end
  end
  if e.forwardagent_flag == "yes" then spec.forward_agent = true end
  if e.proxycommand then -- its tokens are expanded with the spec's (spec.lua)
    local _, perr = percent(e.proxycommand, { h = "", n = "", p = "", r = "", k = "" })
    if perr then return nil, ("%s: %s in proxycommand"):format(tostring(e._where.proxycommand), perr) end
    spec.proxy_command = e.proxycommand
  end
  for key, field in pairs(SPEC_ALGS) do
    if e[key .. "_set"] then
      local list, dropped = M.for_libssh(key, e[key])
      -- a name the line asked for (not one of OpenSSH's defaults) that libssh lacks is said
      local v = e._options[key][1]
      if v:sub(1, 1) ~= "-" then
        local asked = {}
        for _, n in ipairs(split_commas((v:gsub("^[%+%^]", "")))) do asked[n] = true end
        for _, d in ipairs(dropped) do
          if asked[d] then note_once(("%s %s (libssh 0.10 lacks it)"):format(key, d), e._where[key]) end
        end
      end
      if list == "" then
        return nil, ("%s: %s %s: libssh 0.10 supports none of these (it has %s)"):format(e._where[key], key,
          e._options[key][1], LIBSSH[key].all)
      end
      spec[field] = list
    end
  end
  -- ControlMaster / ControlPath / ControlPersist: reuse across runs through sshchain's own mux
  -- (sshchain.mux; a chain uses it on its jump hosts only). ControlPath set: a mux is used when
  -- one answers; ControlMaster other than no, with ControlPersist: one is started on first use
  -- and persists that long (yes or 0: as long as sshchain allows, 10^7 s). The socket is
  -- sshchain's (~/.ssh/sshchain/mux-...), not ControlPath's: OpenSSH's masters speak another
  -- protocol; that is said once.
  local opt = e._options
  local cm = opt.controlmaster and opt.controlmaster[1]:lower() or "no"
  cm = YESNO[cm] or cm
  local cpath = opt.controlpath and opt.controlpath[1]
  if cpath and cpath:lower() == "none" then cpath = nil end
  if cpath then
    note_once("ControlPath (sshchain's mux keeps its own socket under ~/.ssh/sshchain)", e._where.controlpath)
  end
  local cp = opt.controlpersist and opt.controlpersist[1]:lower() or "no"
  local persist = YESNO[cp] == nil and convtime(cp) or (YESNO[cp] == "yes" and 0) or nil
  if persist then persist = (persist == 0 or persist > 1e7) and 1e7 or persist end
  if cm ~= "no" and persist then
    spec.control, spec.control_persist = true, persist
  elseif cm ~= "no" or cpath then
    spec.control = true
  end
  if e.sendenv then spec.send_env = e.sendenv end
  if e.batchmode == "yes" then spec.batch = true end
  if e._options.hashknownhosts and e._options.hashknownhosts[1] == "yes" then spec.hash_known_hosts = true end
  if not e._jump then return spec end
  local hops = {}
  for i, h in ipairs(e._jump.hops) do hops[i] = { user = h.user, host = h.host, port = h.port } end
  return spec, hops
end

--- The chain of specs (jump hosts first) to reach `name`. OpenSSH semantics: for
--- "ProxyJump a,b" the target is reached through a then b; a's own ProxyJump applies (nested),
--- b's does not.
function M.chain(name, opts, depth)
  depth = depth or 0
  if depth > 10 then
    return nil, "ProxyJump loop or chain deeper than 10 at " .. (type(name) == "table" and name.host or name)
  end
  local spec, jumps = M.spec_for(name, opts)
  if not spec then return nil, jumps end
  if not jumps then return { spec } end
  -- opts.cache (a table the caller keeps, e.g. an inventory's): the chain to a jump host is
  -- the same for every host behind it, so it is made once
  local key = opts and opts.cache and ("%s@%s:%s"):format(jumps[1].user or "", jumps[1].host, jumps[1].port or "")
  local chain, err
  if key and opts.cache[key] then
    chain = {}
    for i, s in ipairs(opts.cache[key]) do
      local c = {}
      for k, v in pairs(s) do c[k] = v end
      chain[i] = c
    end
  else
    chain, err = M.chain(jumps[1], opts, depth + 1)
    if not chain then return nil, err end
    if key then
      local keep = {}
      for i, s in ipairs(chain) do
        local c = {}
        for k, v in pairs(s) do c[k] = v end
        keep[i] = c
      end
      opts.cache[key] = keep
    end
  end
  for i = 2, #jumps do
    local s, serr = M.spec_for(jumps[i], opts)
    if not s then return nil, serr end
    -- as ssh -J: a later jump's own ProxyJump and ProxyCommand do not apply (it is reached
    -- through the one before it)
    s.proxy_command = nil
    chain[#chain + 1] = s
  end
  chain[#chain + 1] = spec
  return chain
end

--- resolve(name, opts) -> list of specs for sshchain.connect; opts.config: the file to read
--- alone (as ssh -F), else ~/.ssh/config then /etc/ssh/ssh_config. Spec fields from opts are
--- applied by the caller as defaults.
function M.resolve(name, opts)
  local chain, err = M.chain(name, opts)
  if not chain then return nil, "ssh_config: " .. err end
  return chain
end

--- Every Host name a config file lists (not patterns, not negations), sorted: for inventories.
function M.host_names(path)
  local names, seen = {}, {}
  local function walk(p, depth)
    if depth > 16 then return nil, p .. ": Include nested too deeply" end
    local lines, err = read_lines(p)
    if not lines then
      if depth == 0 then return nil, err end
      return true
    end
    for _, l in ipairs(lines) do
      if l.key == "host" then
        for _, pat in ipairs(l.args) do
          if not pat:find("[%*%?]") and pat:sub(1, 1) ~= "!" and not seen[pat] then
            seen[pat] = true
            names[#names + 1] = pat
          end
        end
      elseif l.key == "include" then
        local li = local_info()
        for _, a in ipairs(l.args) do
          local f = a
          if f:sub(1, 1) ~= "/" and f:sub(1, 1) ~= "~" then f = "~/.ssh/" .. f end
          for _, g in ipairs(M.glob(tilde(f, li))) do
            local ok, ierr = walk(g, depth + 1)
            if not ok then return nil, ierr end
          end
        end
      end
    end
    return true
  end
  local ok, err = walk(path, 0)
  if not ok then return nil, err end
  table.sort(names)
  return names, seen
end

--- sshlua -G [-F FILE] [-l USER] [-p PORT] HOST: prints the effective configuration; the exit
--- status (255 for a bad configuration, as ssh).
function M.main_G(args)
  local opts, host = {}, nil
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-F" or a == "-l" or a == "-p" then
      local v = args[i + 1]
      if not v then
        io.stderr:write("sshlua -G: option " .. a .. " needs a value\n")
        return 2
      end
      if a == "-F" then opts.config = v elseif a == "-l" then opts.user = v else opts.port = v end
      i = i + 2
    elseif a == "-h" or a == "--help" then
      io.stdout:write("usage: sshlua -G [-F configfile] [-l user] [-p port] [user@]host\n"
        .. "Prints the effective ssh_config of host in ssh -G's format.\n")
      return 0
    elseif a:sub(1, 1) == "-" then
      io.stderr:write("sshlua -G: unknown option " .. a .. "\n")
      return 2
    else
      if host then
        io.stderr:write("sshlua -G: one host only\n")
        return 2
      end
      host = a
      i = i + 1
    end
  end
  if not host then
    io.stderr:write("usage: sshlua -G [-F configfile] [-l user] [-p port] [user@]host\n")
    return 2
  end
  -- the destination as ssh takes it: ssh://[user@]host[:port], or [user@]host (no :port)
  local user, alias, port
  local uri = host:match("^ssh://(.*)$")
  if uri then
    user, alias, port = split_target(uri)
  else
    user, alias = host:match("^(.+)@([^@]+)$")
    alias = alias or host
  end
  if opts.port then
    local n = tostring(opts.port):match("^%d+$") and tonumber(opts.port)
    if not n or n < 1 or n > 65535 then
      io.stderr:write("sshlua -G: Bad port '" .. tostring(opts.port) .. "'\n")
      return 255
    end
  end
  opts.user = opts.user or user
  opts.port = opts.port or port
  local e, err = M.effective(alias, opts)
  if not e then
    io.stderr:write("sshlua: " .. err .. "\n")
    return 255
  end
  io.stdout:write(M.dump(e))
  return 0
end

return M
