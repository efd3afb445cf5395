/* agentfwd.c - agent forwarding (ForwardAgent, spec.forward_agent): the session's command
 * channels ask for it (channel.c sends auth-agent-req@openssh.com), and each auth-agent channel
 * the server then opens is accepted and pumped to the client's own agent (spec.agent socket, else
 * $SSH_AUTH_SOCK), so that ssh-add -l on that hop lists the client's keys. Without a socket the
 * channels are refused. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"
#include "pump.h"

typedef struct {
    sc_chanuser cu;
} agent_forwarder;

static void agent_pump_done(sc_pump *p, void *ud)
{
    (void)ud;
    sc_pump_close(p);
}

static void agent_pump_failed(sc_pump *p, const sc_err *err, void *ud)
{
    (void)err;
    (void)ud;
    sc_pump_close(p);
}

static const sc_pump_events agent_pump_events = {NULL, agent_pump_failed, agent_pump_done};

static int connect_agent(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!path || !*path || strlen(path) >= sizeof sa.sun_path)
        return -1;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int agent_incoming(sc_chanuser *u, ssh_message msg)
{
    sc_session *s = u->session;
    if (ssh_message_subtype(msg) != SSH_CHANNEL_AUTH_AGENT)
        return 0;
    const char *sock = s->spec.agent_sock ? s->spec.agent_sock : getenv("SSH_AUTH_SOCK");
    int fd = s->spec.agent != 0 ? connect_agent(sock) : -1;
    if (fd < 0) {
        ssh_message_reply_default(msg); /* refused: no agent here */
        return 1;
    }
    ssh_channel ch = ssh_message_channel_request_open_reply_accept(msg);
    if (!ch) {
        close(fd);
        return 1;
    }
    if (!sc_pump_attach(s, ch, fd, &agent_pump_events, NULL)) {
        ssh_channel_free(ch);
        close(fd);
    }
    return 1;
}

static void agent_service(sc_chanuser *u) { (void)u; }

static void agent_session_lost(sc_chanuser *u, const sc_err *why)
{
    (void)why;
    free((agent_forwarder *)((char *)u - offsetof(agent_forwarder, cu)));
}

void sc_agentfwd_attach(sc_session *s)
{
    agent_forwarder *f = calloc(1, sizeof *f);
    if (!f)
        return;
    f->cu.service = agent_service;
    f->cu.session_lost = agent_session_lost;
    f->cu.incoming = agent_incoming;
    sc_session_attach(s, &f->cu);
}
