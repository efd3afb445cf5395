-- topology.lua: the test lab, written once. scripts/lab/generate.lua makes everything else from
-- it (the sshd configs, known_hosts, lab.lua for the specs, the Lua inventory and its secrets, the
-- OpenSSH client config, and the lists scripts/lab.sh builds the network and starts servers from).
--
--   root netns (the client) 10.231.1.1 --veth-- scl-j1 10.231.1.2 --veth-- scl-j2 10.231.2.2
--   scl-j2 has a bridge (10.231.3.1/24) with one veth per target namespace: t1..t4 and n01..n16.
--
-- Routing: every namespace, the root one too, has `unreachable 10.231.0.0/16`: only the connected
-- /24s are more specific, nothing forwards, nothing leaves the machine. 10.231.9.9 answers nowhere.

local T = {}

T.range = "10.231.0.0/16"
T.unreachable = { host = "10.231.9.9", port = 22 }

-- Namespaces and the links between them. "root" is the client's own namespace.
T.links = {
  { a = "root", a_if = "sclv-j1", a_addr = "10.231.1.1/24", b = "scl-j1", b_if = "v-root", b_addr = "10.231.1.2/24" },
  { a = "scl-j1", a_if = "v-j2", a_addr = "10.231.2.1/24", b = "scl-j2", b_if = "v-j1", b_addr = "10.231.2.2/24" },
}
T.bridge = { ns = "scl-j2", name = "br0", addr = "10.231.3.1/24" }

-- Users of the servers. password = nil: key only (the account is not locked: '*' hash).
-- sudo: the user may sudo with its password (when sudo is installed).
T.users = {
  sclj1 = { password = "j1-secret", key = "j1" },
  sclj2 = { password = "j2-secret", key = "j2" },
  sclt1 = { key = "t1" },
  sclt2 = { password = "t2-secret", key = "t2" },
  sclt3 = { password = "t3-secret", key = "t3", sudo = true },
  sclt4 = { password = "t4-secret", key = "t4" },
  sclnode = { key = "node" },
}

-- Client keys (keys/id_NAME): type, passphrase. id_other is authorized nowhere.
T.client_keys = {
  j1 = { type = "ed25519" }, j2 = { type = "ed25519" }, t1 = { type = "ed25519", passphrase = "t1-pass" },
  t2 = { type = "rsa" }, t3 = { type = "ed25519" }, t4 = { type = "ed25519" }, node = { type = "ed25519" },
  other = { type = "ed25519" }, certuser = { type = "ed25519" },
  user_ca = { type = "ed25519" }, host_ca = { type = "ed25519" },
}
-- Host keys (hostkeys/NAME, ed25519 unless NAME:TYPE): "bad" is the key a man in the middle would
-- show (known_hosts.bad); "legacy" the RSA key of the old-gear sshd.
T.host_keys = { "j1", "j2", "t1", "t2", "t3", "t4", "node", "bad", "legacy:rsa" }
-- OpenSSH certificates the lab signs (ssh-keygen -s): kind, CA (a client key), the key signed
-- (under the lab's directory), principals. id_certuser logs into t3cert by its certificate only
-- (authorized nowhere); t3's host key has a certificate that t3cert presents.
T.certs = {
  { kind = "user", ca = "user_ca", key = "keys/id_certuser", principals = "sclt3" },
  { kind = "host", ca = "host_ca", key = "hostkeys/t3", principals = "10.231.3.13" },
}

-- Targets behind j2, on its bridge.
T.targets = {
  t1 = "10.231.3.11", t2 = "10.231.3.12", t3 = "10.231.3.13", t4 = "10.231.3.14",
}
T.nodes = {} -- n01..n16: a small cluster, user sclnode, key id_node, one host key for all
for i = 1, 16 do T.nodes[#T.nodes + 1] = { name = ("n%02d"):format(i), addr = "10.231.3." .. (100 + i) } end

-- Authentication settings of an sshd.
local PW = { "UsePAM no", "PasswordAuthentication yes", "KbdInteractiveAuthentication no" }
local NOPW = { "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no" }
-- keyboard-interactive goes through PAM (Debian's stock /etc/pam.d/sshd); without that file t2 uses
-- plain password authentication, and lab.lua says kbdint = false
local KBD = { "UsePAM yes", "PasswordAuthentication no", "KbdInteractiveAuthentication yes" }

-- Every sshd: name, namespace, address, port, user, host key, its options (first: sshd takes an
-- option's first value). spec: the host spec lab.lua gives the specs (fields of the user added
-- by the generator: user, password, identity). known: whether known_hosts lists it ("hashed":
-- hashed with ssh-keygen -H). inventory / ssh_config: whether, and by which name, they list it.
T.servers = {
  { name = "j1", ns = "scl-j1", addr = "10.231.1.2", port = 22, user = "sclj1", hostkey = "j1", options = PW,
    spec = { password = true }, known = "plain", inventory = { password_env = "SCL_J1_PASSWORD" }, ssh_config = true },
  { name = "j1big", ns = "scl-j1", addr = "10.231.1.2", port = 2200, user = "sclj1", hostkey = "j1",
    options = { PW, "MaxSessions 100", "MaxStartups 200:30:400" }, spec = { password = true }, known = "plain",
    ssh_config = true },
  { name = "j2", ns = "scl-j2", addr = "10.231.2.2", port = 2222, user = "sclj2", hostkey = "j2", options = PW,
    spec = { identity = true }, known = "plain", inventory = { via = "j1" }, ssh_config = { jump = "j1" } },
  { name = "j2nofwd", ns = "scl-j2", addr = "10.231.2.2", port = 2223, user = "sclj2", hostkey = "j2",
    options = { PW, "AllowTcpForwarding no" }, spec = { identity = true }, known = "plain", ssh_config = { jump = "j1" } },
  { name = "t1", ns = "scl-t1", addr = T.targets.t1, port = 22, user = "sclt1", hostkey = "t1", options = NOPW,
    spec = { identity = true, passphrase = true }, known = "plain",
    inventory = { via = "j2", passphrase_env = "SCL_T1_PASSPHRASE" }, ssh_config = { jump = "j2" }, http = true },
  { name = "t2", ns = "scl-t2", addr = T.targets.t2, port = 22, user = "sclt2", hostkey = "t2", options = KBD,
    options_without_pam = PW, spec = { password = true }, known = "plain",
    inventory = { via = "j2", password_env = "SCL_T2_PASSWORD" }, ssh_config = { jump = "j2" }, http = true },
  { name = "t3", ns = "scl-t3", addr = T.targets.t3, port = 22, user = "sclt3", hostkey = "t3", options = PW,
    spec = { password = true, identity = true }, known = "hashed", inventory = { via = "j2" },
    ssh_config = { jump = "j2" }, http = true },
  { name = "t4", ns = "scl-t4", addr = T.targets.t4, port = 22, user = "sclt4", hostkey = "t4", options = PW,
    spec = { password = true, identity = true }, known = "hashed", inventory = { via = "j2" },
    ssh_config = { jump = "j2" }, http = true },
  -- t4's hostile scp (fixtures/evil-scp.sh: the attacks of the transfer specs)
  { name = "t4evil", ns = "scl-t4", addr = T.targets.t4, port = 2022, user = "sclt4", hostkey = "t4",
    options = { PW, "ForceCommand %LAB%/evil-scp.sh" }, spec_name = "evil", spec = { identity = true },
    known = "plain" },
  -- t4 as a device that only speaks a shell (fixtures/bmc-cli.sh: prompt, --More--, enable)
  { name = "t4bmc", ns = "scl-t4", addr = T.targets.t4, port = 2024, user = "sclt4", hostkey = "t4",
    options = { PW, "ForceCommand %LAB%/bmc-cli.sh" }, spec_name = "bmc", spec = { identity = true },
    known = "plain", inventory = { via = "j2", name = "bmc" } },
  -- t4 as old gear (many BMCs): only diffie-hellman-group14-sha1 and an ssh-rsa host key
  { name = "t4legacy", ns = "scl-t4", addr = T.targets.t4, port = 2025, user = "sclt4", hostkey = "legacy",
    options = { PW, "KexAlgorithms diffie-hellman-group14-sha1", "HostKeyAlgorithms ssh-rsa" },
    spec_name = "legacy", spec = { identity = true }, known = "plain" },
  -- t3 trusting a user CA and presenting a host certificate
  { name = "t3cert", ns = "scl-t3", addr = T.targets.t3, port = 2026, user = "sclt3", hostkey = "t3",
    options = { NOPW, "TrustedUserCAKeys %LAB%/keys/id_user_ca.pub", "HostCertificate %LAB%/hostkeys/t3-cert.pub" },
    spec_name = "certsrv", spec = {}, known = "plain" },
  -- t4 speaking SFTP only (no scp binary reachable); it also has the RSA host key, which the
  -- client is to prefer when known_hosts knows only that one (as ssh orders them)
  { name = "t4sftp", ns = "scl-t4", addr = T.targets.t4, port = 2023, user = "sclt4", hostkey = "t4",
    options = { PW, "ForceCommand internal-sftp", "HostKey %LAB%/hostkeys/legacy" }, spec_name = "sftponly",
    spec = { identity = true }, known = "plain" },
}
for _, n in ipairs(T.nodes) do
  T.servers[#T.servers + 1] = { name = n.name, ns = "scl-" .. n.name, addr = n.addr, port = 22, user = "sclnode",
    hostkey = "node", options = NOPW, node = true, known = "plain", inventory = { via = "j2" },
    ssh_config = { jump = "j2" } }
end

-- Programs of spec/fixtures the servers above run (copied into the lab's directory).
T.fixtures = { "evil-scp.sh", "bmc-cli.sh" }

-- Servers that are not sshd: a listener that accepts and never answers, and a closed port.
T.silent = { name = "silent", ns = "scl-j1", addr = "10.231.1.2", port = 2299 }
T.refused = { host = "10.231.1.2", port = 2399 }
T.http_port = 8080 -- every target with http = true serves www/NAME/ (index.html, big.bin) there

-- The inventory's groups.
T.groups = {
  jumps = { "j1", "j2" },
  targets = { "t1", "t2", "t3", "t4" },
  nodes = { "n*" },
  all = { "jumps", "targets", "nodes" },
}

return T
