/* proxy.c - a first hop reached through a ProxyCommand, run as OpenSSH runs it: the user's shell
 * ($SHELL, else /bin/sh) with "-c exec COMMAND", its stdin and stdout one end of a socketpair whose
 * other end is the session's socket, its stderr the caller's. libuv starts and reaps it (no
 * blocking fork/wait in the loop). A command that ends before the handshake is over fails the hop
 * with ECONNECT naming it and its exit status: a failure libssh sees first (end of file) waits
 * up to PROXY_GRACE_MS for the exit, so that the message can say how the command ended. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

enum { PROXY_GRACE_MS = 2000 };

typedef struct sc_proxy sc_proxy;

/* The loop's live proxies, killed and reaped when the loop is freed. */
struct sc_proxies {
    sc_cleanup cleanup;
    sc_loop *loop;
    sc_proxy *head;
};

struct sc_proxy {
    uv_process_t proc;
    uv_timer_t grace;
    sc_loop *loop;
    sc_session *s; /* NULL once the session has let go of it */
    char *cmd;
    int handles; /* open libuv handles (process, timer) */
    int exited;
    int64_t status;
    int term_signal;
    int failing;     /* our own sc_session_fail: not intercepted */
    int has_pending; /* libssh failed first: err waits for the exit (or the grace timer) */
    sc_err pending;
    sc_proxy *next;
};

static void unlist(sc_proxy *px)
{
    struct sc_proxies *all = px->loop->proxies;
    if (!all)
        return;
    for (sc_proxy **pp = &all->head; *pp; pp = &(*pp)->next)
        if (*pp == px) {
            *pp = px->next;
            break;
        }
}

static void on_proxy_handle_closed(uv_handle_t *h)
{
    sc_proxy *px = h->data;
    if (--px->handles == 0 && !px->s) {
        free(px->cmd);
        free(px);
    }
}

static void proxy_close_handles(sc_proxy *px)
{
    unlist(px);
    if (!uv_is_closing((uv_handle_t *)&px->grace))
        uv_close((uv_handle_t *)&px->grace, on_proxy_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&px->proc))
        uv_close((uv_handle_t *)&px->proc, on_proxy_handle_closed);
}

/* "exited with status 3", "was killed by signal 9" */
static void how_it_ended(const sc_proxy *px, char *out, size_t cap)
{
    if (px->term_signal)
        snprintf(out, cap, "was killed by signal %d", px->term_signal);
    else
        snprintf(out, cap, "exited with status %lld", (long long)px->status);
}

/* Fails the session because the command ended (or closed its output) before the handshake. */
static void fail_for_command(sc_proxy *px)
{
    sc_session *s = px->s;
    if (!s || s->state >= SS_READY)
        return;
    char how[64];
    how_it_ended(px, how, sizeof how);
    px->failing = 1;
    if (px->has_pending) {
        /* libssh's words without the "LABEL: STAGE: " the message starts with */
        const char *why = px->pending.msg;
        size_t ln = strlen(s->label);
        if (strncmp(why, s->label, ln) == 0 && why[ln] == ':') {
            const char *rest = strstr(why + ln + 1, ": ");
            why = rest ? rest + 2 : why;
        }
        sc_session_failf(s, SC_ECONNECT, NULL, "proxy",
                         "ProxyCommand '%s' %s before the handshake was over (%s)", px->cmd, how,
                         why);
    } else
        sc_session_failf(s, SC_ECONNECT, NULL, "proxy",
                         "ProxyCommand '%s' %s before the handshake was over", px->cmd, how);
    px->failing = 0;
}

static void on_proxy_exit(uv_process_t *p, int64_t status, int term_signal)
{
    sc_proxy *px = p->data;
    px->exited = 1;
    px->status = status;
    px->term_signal = term_signal;
    uv_timer_stop(&px->grace);
    fail_for_command(px); /* after the handshake the session sees the end of file itself */
    if (!px->s)
        proxy_close_handles(px);
}

/* The command still runs after its output ended: the failure stands as libssh saw it. */
static void on_proxy_grace(uv_timer_t *t)
{
    sc_proxy *px = t->data;
    sc_session *s = px->s;
    if (!s || s->state >= SS_READY)
        return;
    px->failing = 1;
    sc_session_fail(s, &px->pending);
    px->failing = 0;
}

/* The session goes away: the command is told to end (it is reaped when it has). */
static void proxy_release(void *transport)
{
    sc_proxy *px = transport;
    px->s = NULL;
    uv_timer_stop(&px->grace);
    if (px->exited)
        proxy_close_handles(px);
    else
        uv_process_kill(&px->proc, SIGHUP); /* as ssh ends its ProxyCommand */
}

/* The connection ending during the handshake or auth (libssh's end of file: reason NULL,
 * "dropped" or "lost") is the command's doing: the command's end explains it, once known. Any
 * other failure (a timeout, the host key, auth, the algorithms) is the session's own. */
static int proxy_intercept(void *transport, const sc_err *err)
{
    sc_proxy *px = transport;
    sc_session *s = px->s;
    if (px->failing || !s || (s->state != SS_HANDSHAKE && s->state != SS_AUTH))
        return 0;
    if (err->code != SC_ECONNECT ||
        (err->reason && strcmp(err->reason, "dropped") != 0 && strcmp(err->reason, "lost") != 0))
        return 0;
    if (px->has_pending)
        return 1; /* already waiting */
    px->pending = *err;
    px->has_pending = 1;
    if (px->exited) {
        fail_for_command(px);
        return 1;
    }
    if (s->poll_events >= 0)
        uv_poll_stop(&s->poll); /* the socket is at its end: nothing to read until we decide */
    sc_timer_start(&px->grace, on_proxy_grace, PROXY_GRACE_MS, 0);
    return 1;
}

static const sc_transport_ops proxy_transport = {proxy_release, proxy_intercept, NULL};

/* At loop free: the commands still running are killed and reaped (the loop's last turns are
 * not long enough to wait for a SIGTERM to be obeyed). */
static void proxies_free(sc_cleanup *c)
{
    struct sc_proxies *all = (struct sc_proxies *)c;
    sc_proxy *px;
    while ((px = all->head) != NULL) {
        all->head = px->next;
        if (!px->exited && px->proc.pid > 0) {
            kill(px->proc.pid, SIGKILL);
            waitpid(px->proc.pid, NULL, 0);
        }
        px->exited = 1;
        if (px->s && px->s->transport == px) /* a session still up no longer has it */
            px->s->transport = NULL;
        px->s = NULL;
        if (!uv_is_closing((uv_handle_t *)&px->grace))
            uv_close((uv_handle_t *)&px->grace, on_proxy_handle_closed);
        if (!uv_is_closing((uv_handle_t *)&px->proc))
            uv_close((uv_handle_t *)&px->proc, on_proxy_handle_closed);
    }
    all->loop->proxies = NULL;
    free(all);
}

static struct sc_proxies *proxies_of(sc_loop *loop)
{
    if (!loop->proxies) {
        struct sc_proxies *all = calloc(1, sizeof *all);
        if (!all)
            return NULL;
        all->cleanup.run = proxies_free;
        all->loop = loop;
        sc_loop_at_free(loop, &all->cleanup);
        loop->proxies = all;
    }
    return loop->proxies;
}

void sc_proxy_start(sc_session *s)
{
    struct sc_proxies *all = proxies_of(s->loop);
    sc_proxy *px = calloc(1, sizeof *px);
    char *cmd = sc_strdup(s->spec.proxy_command);
    size_t n = strlen(s->spec.proxy_command) + 6;
    char *line = malloc(n);
    if (!all || !px || !cmd || !line) {
        free(px);
        free(cmd);
        free(line);
        sc_session_failf(s, SC_EIO, "connect", NULL, "out of memory");
        return;
    }
    snprintf(line, n, "exec %s", s->spec.proxy_command);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        int e = errno;
        free(px);
        free(cmd);
        free(line);
        sc_session_failf(s, SC_EIO, "connect", NULL, "socketpair: %s", strerror(e));
        return;
    }
    const char *shell = getenv("SHELL");
    if (!shell || !*shell)
        shell = "/bin/sh";
    char *args[] = {(char *)shell, "-c", line, NULL};
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_INHERIT_FD, .data.fd = sv[0]},
        {.flags = UV_INHERIT_FD, .data.fd = sv[0]},
        {.flags = UV_INHERIT_FD, .data.fd = 2},
    };
    uv_process_options_t o = {
        .exit_cb = on_proxy_exit,
        .file = shell,
        .args = args,
        .stdio_count = 3,
        .stdio = stdio,
    };
    px->loop = s->loop;
    px->cmd = cmd;
    px->proc.data = px;
    int rc = uv_spawn(&s->loop->uv, &px->proc, &o);
    close(sv[0]);
    free(line);
    if (rc < 0) {
        /* a handle uv_spawn refused still has to be closed */
        px->handles = 1;
        uv_close((uv_handle_t *)&px->proc, on_proxy_handle_closed);
        close(sv[1]);
        sc_session_failf(s, SC_ECONNECT, "connect", "proxy",
                         "ProxyCommand '%s': cannot start %s: %s", s->spec.proxy_command, shell,
                         uv_strerror(rc));
        return;
    }
    px->handles = 2;
    uv_timer_init(&s->loop->uv, &px->grace);
    px->grace.data = px;
    px->s = s;
    px->next = all->head;
    all->head = px;
    sc_session_set_transport(s, px, &proxy_transport);
    s->t_connected = sc_loop_now();
    if (sc_session_begin_handshake(s, sv[1]) == 0)
        sc_session_kick(s);
}
