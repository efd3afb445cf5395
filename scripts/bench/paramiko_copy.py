#!/usr/bin/python3
"""paramiko_copy.py up|down LAB LOCAL REMOTE: the original tool's approach, for comparison:
paramiko through j1 -> j2 -> t4 (each hop a direct-tcpip channel of the previous transport),
then python3-scp's SCPClient.put/get."""
import sys

import paramiko
from scp import SCPClient

direction, lab, local, remote = sys.argv[1:5]
hops = [("10.231.1.2", 22, "sclj1", "id_j1"), ("10.231.2.2", 2222, "sclj2", "id_j2"),
        ("10.231.3.14", 22, "sclt4", "id_t4")]
sock, clients = None, []
for host, port, user, key in hops:
    c = paramiko.SSHClient()
    c.load_host_keys(lab + "/known_hosts")
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.connect(host, port=port, username=user, key_filename=lab + "/keys/" + key, sock=sock,
              allow_agent=False, look_for_keys=False, timeout=30)
    clients.append(c)
    nxt = hops[len(clients)] if len(clients) < len(hops) else None
    if nxt:
        sock = c.get_transport().open_channel("direct-tcpip", (nxt[0], nxt[1]), ("127.0.0.1", 0))
scp = SCPClient(clients[-1].get_transport())
if direction == "up":
    scp.put(local, remote)
else:
    scp.get(remote, local)
scp.close()
for c in reversed(clients):
    c.close()
