/* connect.c - starting a session: directly over TCP (session.c resolves and connects), or as a
 * hop through its parent. A hop is a direct-tcpip channel on the parent's connection, pumped
 * (pump.c) to one end of a socketpair whose other end is the child's socket: no ssh binary, and
 * any number of children share the parent's one connection. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"
#include "pump.h"

static void hop_close(void *transport) { sc_pump_close(transport); }
static void hop_output(void *transport) { sc_pump_fd_news(transport); }

static const sc_transport_ops hop_transport = {hop_close, NULL, hop_output};

/* The pump on the parent has opened the direct-tcpip channel: the child's handshake starts on
 * its end of a new socketpair, the pump moves the other end's bytes through the channel. */
static void hop_opened(sc_pump *p, void *ud)
{
    sc_session *child = ud;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
        sc_session_failf(child, SC_EIO, NULL, NULL, "socketpair: %s", strerror(errno));
        return;
    }
    sc_pump_set_fd(p, sv[0]);
    child->t_connected = sc_loop_now();
    if (sc_session_begin_handshake(child, sv[1]) == 0) {
        sc_pump_feed(p, child->lib_fd, child); /* the channel's bytes skip the socketpair */
        sc_session_kick(child);
    }
}

static void hop_failed(sc_pump *p, const sc_err *err, void *ud)
{
    (void)p;
    sc_session *child = ud;
    sc_err e;
    sc_err_format(&e, err->code, child->label, child->hop, "hop channel", err->reason, "%s",
                  err->msg);
    sc_session_fail(child, &e);
}

static const sc_pump_events hop_events = {hop_opened, hop_failed, NULL};

sc_session *sc_session_start(sc_loop *loop, sc_session *parent, sc_hostspec *spec, sc_op **opp)
{
    sc_session *s = sc_session_new(loop, parent, spec, opp);
    if (!s)
        return NULL;
    if (s->spec.forward_agent)
        sc_agentfwd_attach(s);
    if (!parent) {
        if (s->spec.proxy_command)
            sc_proxy_start(s);
        else if (s->spec.mux_path)
            sc_mux_start(s);
        else
            sc_session_connect_tcp(s);
        return s;
    }
    if (s->spec.mux_path) {
        sc_session_failf(s, SC_ECONNECT, "connect", "mux",
                         "a mux reaches a first hop only (this hop goes through hop %d)",
                         parent->hop);
        return s;
    }
    if (s->spec.proxy_command) {
        sc_session_failf(s, SC_ECONNECT, "connect", "proxy",
                         "a ProxyCommand reaches a first hop only (this hop goes through hop %d)",
                         parent->hop);
        return s;
    }
    if (parent->state >= SS_FAILED) {
        sc_session_failf(s, SC_ECLOSED, NULL, "parent", "hop %d is closed", parent->hop);
        return s;
    }
    sc_pump *pump =
        sc_pump_open(parent, -1, s->spec.host, s->spec.port, "127.0.0.1", 0, &hop_events, s);
    if (!pump) {
        sc_session_failf(s, SC_EIO, NULL, NULL, "out of memory");
        return s;
    }
    sc_pump_set_window(pump, SC_HOP_WINDOW);
    sc_session_set_transport(s, pump, &hop_transport);
    sc_session_kick(parent);
    return s;
}
