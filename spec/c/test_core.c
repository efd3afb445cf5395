/* test_core.c - C unit tests of the core pieces that work without a server: buffers, error
 * text, the loop's ready list and sleeps, and session failure paths that need no sshd
 * (unresolvable name, refused port on loopback). Prints TAP. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/exec.h"
#include "../../core/loop.h"
#include "../../core/session.h"

static int n_test, n_fail;

static void ok(int cond, const char *what)
{
    n_test++;
    if (!cond)
        n_fail++;
    printf("%sok %d - %s\n", cond ? "" : "not ", n_test, what);
}

static void test_buf(void)
{
    sc_buf b = {0};
    char big[10000];
    memset(big, 'x', sizeof big);
    ok(sc_buf_append(&b, "hello", 5) == 0 && sc_buf_avail(&b) == 5, "buf append");
    sc_buf_consume(&b, 2);
    ok(sc_buf_avail(&b) == 3 && memcmp(b.data + b.off, "llo", 3) == 0, "buf consume");
    ok(sc_buf_append(&b, big, sizeof big) == 0 && sc_buf_avail(&b) == 3 + sizeof big, "buf grows");
    sc_buf_consume(&b, sc_buf_avail(&b));
    ok(sc_buf_avail(&b) == 0 && b.off == 0, "buf drained resets");
    sc_buf_free(&b);
    ok(b.data == NULL && b.cap == 0, "buf free");
}

static void test_err(void)
{
    sc_err e;
    sc_err_set(&e, SC_EAUTH, "hop %d %s", 2, "bad\x1b[31mname\nx");
    ok(e.code == SC_EAUTH && strcmp(e.msg, "hop 2 bad?[31mname x") == 0, "control characters are replaced");
    ok(strcmp(sc_code_name(SC_ETIMEDOUT), "ETIMEDOUT") == 0, "code names");
    ok(strcmp(sc_code_name((sc_code)99), "EIO") == 0, "unknown code is EIO");
}

static void test_sleep(sc_loop *loop)
{
    double t0 = sc_loop_now();
    sc_op *a = sc_sleep_start(loop, 0.05);
    sc_op *b = sc_sleep_start(loop, 0.01);
    int order_ok = 1, seen = 0;
    for (int i = 0; i < 100 && seen < 2; i++) {
        sc_loop_turn(loop, 100);
        sc_op *op;
        while ((op = sc_loop_pop_ready(loop)) != NULL) {
            if (seen == 0 && op != b)
                order_ok = 0;
            seen++;
            sc_op_release(op);
        }
    }
    ok(seen == 2 && order_ok, "sleeps complete in deadline order");
    ok(sc_loop_now() - t0 >= 0.045, "sleep waits its time");
    ok(a->done && a->err.code == SC_OK, "sleep completes OK");
    sc_op_release(a);
    sc_op_release(b);
    sc_op *c = sc_sleep_start(loop, 10);
    sc_op_abandon(c); /* canceled, freed once its timer has closed */
    sc_loop_turn(loop, 0);
    sc_op *r;
    while ((r = sc_loop_pop_ready(loop)) != NULL)
        sc_op_release(r);
    ok(loop->n_live_ops == 0, "abandoned sleep is freed");
}

static sc_err connect_and_wait(sc_loop *loop, const char *host, int port, double timeout)
{
    sc_hostspec spec = {0};
    spec.host = strdup(host);
    spec.port = port;
    spec.user = strdup("nobody");
    spec.password = strdup("x");
    spec.timeout = timeout;
    sc_op *op = NULL;
    sc_session *s = sc_session_start(loop, NULL, &spec, &op);
    for (int i = 0; i < 500 && !op->done; i++)
        sc_loop_turn(loop, 50);
    sc_err e = op->err;
    if (!op->done)
        sc_err_set(&e, SC_OK, "did not complete");
    sc_op *r;
    while ((r = sc_loop_pop_ready(loop)) != NULL)
        sc_op_release(r);
    sc_op_release(op);
    sc_session_unref(s);
    sc_loop_turn(loop, 0);
    return e;
}

static void test_connect_failures(sc_loop *loop)
{
    sc_err e = connect_and_wait(loop, "127.0.0.1", 1, 5);
    ok(e.code == SC_ECONNECT && strstr(e.msg, "hop 1 nobody@127.0.0.1:1: connect:"), "refused port: ECONNECT naming hop and stage");
    e = connect_and_wait(loop, "no-such-host.invalid", 22, 5);
    ok(e.code == SC_ECONNECT && strstr(e.msg, "resolve"), "unresolvable name: ECONNECT at resolve");
    ok(loop->live_sessions == 0 && loop->n_live_ops == 0, "nothing left alive");
}

int main(void)
{
    ssh_init();
    sc_loop *loop = sc_loop_new();
    test_buf();
    test_err();
    test_sleep(loop);
    test_connect_failures(loop);
    sc_loop_free(loop);
    ssh_finalize();
    printf("1..%d\n", n_test);
    return n_fail ? 1 : 0;
}
