#!/usr/bin/env python3
"""tcpclient.py MODE HOST PORT ...: load generator for the forwarding benchmark.
rate N THREADS: N short HTTP/1.0 GETs of /index.html over THREADS threads; prints connections/s.
slowread BYTES RATE: reads BYTES from a server that streams them, at most RATE bytes/s."""
import socket, sys, threading, time

def rate(host, port, n, threads):
    done = [0]
    lock = threading.Lock()
    def worker(k):
        for _ in range(k):
            s = socket.create_connection((host, port))
            s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
            while s.recv(65536):
                pass
            s.close()
            with lock:
                done[0] += 1
    t0 = time.time()
    ts = [threading.Thread(target=worker, args=(n // threads,)) for _ in range(threads)]
    for t in ts: t.start()
    for t in ts: t.join()
    print("%.1f" % (done[0] / (time.time() - t0)))

def slowread(host, port, total, bps):
    s = socket.create_connection((host, port))
    got, t0 = 0, time.time()
    while got < total:
        b = s.recv(262144)
        if not b:
            break
        got += len(b)
        ahead = got / bps - (time.time() - t0)
        if ahead > 0:
            time.sleep(ahead)
    print(got)

mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "rate":
    rate(host, port, int(sys.argv[4]), int(sys.argv[5]))
else:
    slowread(host, port, int(sys.argv[4]), float(sys.argv[5]))
