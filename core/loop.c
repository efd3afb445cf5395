/* loop.c - the event loop, its ready list, and operation lifetimes. */
#include "loop.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* Each session through a hop holds three fds (socketpair ends, libssh's duplicate): hundreds of
 * sessions need more than a stock soft limit of 1024 open files. Raise it to the hard limit. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 65536 ? 65536 : rl.rlim_max;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Runs what was deferred before this turn; what those ask for runs on the next one. */
static void run_deferred(sc_loop *loop, int canceled)
{
    loop->running = loop->deferred;
    loop->deferred = NULL;
    sc_deferred *d;
    while ((d = loop->running) != NULL) {
        loop->running = d->next;
        d->next = NULL;
        d->queued = 0;
        d->run(d, canceled);
    }
}

static void on_defer_idle(uv_idle_t *h)
{
    sc_loop *loop = h->data;
    loop->idle_ran = 1; /* libuv does not let this turn's poll wait (see on_block_prepare) */
    run_deferred(loop, 0);
    if (!loop->deferred)
        uv_idle_stop(&loop->defer_idle);
}

static sc_loop *volatile interrupt_loop;

static void on_wakeup(uv_async_t *h) { uv_stop(h->loop); }
static void on_poke(uv_async_t *h) { (void)h; }

void sc_interrupt(void)
{
    sc_loop *loop = interrupt_loop;
    if (loop)
        uv_async_send(&loop->wakeup);
}

void sc_loop_defer(sc_loop *loop, sc_deferred *d)
{
    if (d->queued)
        return;
    d->queued = 1;
    d->next = loop->deferred;
    loop->deferred = d;
    uv_idle_start(&loop->defer_idle, on_defer_idle);
    sc_loop_poke(loop);
}

void sc_loop_undefer(sc_loop *loop, sc_deferred *d)
{
    if (!d->queued)
        return;
    sc_deferred **lists[2] = {&loop->deferred, &loop->running};
    for (int i = 0; i < 2; i++) {
        sc_deferred **pp = lists[i];
        while (*pp && *pp != d)
            pp = &(*pp)->next;
        if (*pp) {
            *pp = d->next;
            break;
        }
    }
    d->next = NULL;
    d->queued = 0;
}

void sc_loop_at_free(sc_loop *loop, sc_cleanup *c)
{
    c->next = loop->cleanups;
    loop->cleanups = c;
}

sc_loop *sc_loop_new(void)
{
    sc_loop *loop = calloc(1, sizeof *loop);
    if (!loop)
        return NULL;
    raise_fd_limit();
    if (uv_loop_init(&loop->uv) != 0) {
        free(loop);
        return NULL;
    }
    uv_idle_init(&loop->uv, &loop->defer_idle);
    loop->defer_idle.data = loop;
    uv_async_init(&loop->uv, &loop->wakeup, on_wakeup);
    uv_unref((uv_handle_t *)&loop->wakeup);
    uv_async_init(&loop->uv, &loop->poke, on_poke);
    uv_unref((uv_handle_t *)&loop->poke);
    uv_prepare_init(&loop->uv, &loop->block_prepare);
    uv_check_init(&loop->uv, &loop->block_check);
    loop->block_prepare.data = loop->block_check.data = loop;
    interrupt_loop = loop;
    return loop;
}

void sc_loop_free(sc_loop *loop)
{
    loop->hosted = 0; /* its poke is closed below */
    sc_op *op;
    while ((op = sc_loop_pop_ready(loop)) != NULL)
        sc_op_release(op);
    /* deferred work may hold references that only its run releases */
    while (loop->deferred)
        run_deferred(loop, 1);
    uv_close((uv_handle_t *)&loop->defer_idle, NULL);
    sc_cleanup *c;
    while ((c = loop->cleanups) != NULL) {
        loop->cleanups = c->next;
        c->run(c);
    }
    if (interrupt_loop == loop)
        interrupt_loop = NULL;
    uv_close((uv_handle_t *)&loop->wakeup, NULL);
    uv_close((uv_handle_t *)&loop->poke, NULL);
    uv_close((uv_handle_t *)&loop->block_prepare, NULL);
    uv_close((uv_handle_t *)&loop->block_check, NULL);
    /* Closing handles is asynchronous: let the loop finish every close callback. */
    for (int i = 0; i < 1000 && uv_loop_alive(&loop->uv); i++)
        uv_run(&loop->uv, UV_RUN_NOWAIT);
    if (uv_loop_close(&loop->uv) != 0)
        return; /* something is still open: leak the loop rather than free live handles */
    free(loop);
}

void sc_timer_start(uv_timer_t *t, uv_timer_cb cb, uint64_t ms, uint64_t repeat)
{
    uv_update_time(t->loop);
    uv_timer_start(t, cb, ms, repeat);
}

static void on_turn_timeout(uv_timer_t *t) { (void)t; }

/* libuv hands a watcher started during a turn to epoll only at the next poll, so until then the
 * backend fd does not wake for it: a host loop that blocks on that fd after a turn would sleep
 * through data already waiting on the new watcher's fd. Both layouts of the (private) queue, a
 * pair of pointers before libuv 1.45 and struct uv__queue after, start with `next`, which points
 * at the queue itself when it is empty. */
int sc_loop_has_unpolled(const sc_loop *loop)
{
    const void *q = &loop->uv.watcher_queue;
    return *(void *const *)q != q;
}

void sc_loop_poke(sc_loop *loop)
{
    /* inside a turn the host steps again anyway; without a host nobody polls the backend fd */
    if (loop->hosted && !loop->in_turn)
        uv_async_send(&loop->poke); /* its eventfd is in the backend's set since the first turn */
}

void sc_loop_set_hosted(sc_loop *loop, int hosted) { loop->hosted = hosted; }

static void block_left(sc_loop *loop)
{
    if (loop->blocking) {
        loop->blocking = 0;
        loop->block_leave(loop->block_ud);
    }
}

/* libuv runs prepare handles right before its poll, whose timeout is 0 when idle handles ran in
 * this iteration (the deferred work's) or the loop was told to stop; otherwise it may wait (or
 * not, when a timer is due or handles are closing: entering for nothing is harmless).
 * uv_backend_timeout cannot tell: it says 0 whenever a watcher changed since the last poll. */
static void on_block_prepare(uv_prepare_t *h)
{
    sc_loop *loop = h->data;
    if (loop->may_block && !loop->blocking && !loop->idle_ran && !loop->uv.stop_flag) {
        loop->blocking = 1;
        loop->block_enter(loop->block_ud);
    }
}

static void on_block_check(uv_check_t *h)
{
    sc_loop *loop = h->data;
    loop->idle_ran = 0;
    block_left(loop);
}

void sc_loop_on_block(sc_loop *loop, void (*enter)(void *ud), void (*leave)(void *ud), void *ud)
{
    if (loop->block_enter == enter && loop->block_leave == leave && loop->block_ud == ud)
        return;
    if (loop->block_enter)
        block_left(loop);
    loop->block_enter = enter;
    loop->block_leave = leave;
    loop->block_ud = ud;
    if (!enter) {
        uv_prepare_stop(&loop->block_prepare);
        uv_check_stop(&loop->block_check);
        return;
    }
    uv_prepare_start(&loop->block_prepare, on_block_prepare);
    uv_check_start(&loop->block_check, on_block_check);
    uv_unref((uv_handle_t *)&loop->block_prepare); /* they keep no turn going */
    uv_unref((uv_handle_t *)&loop->block_check);
}

/* A turn that may wait: UV_RUN_ONCE, the hooks told of it. */
static void run_once(sc_loop *loop)
{
    loop->may_block = 1;
    loop->idle_ran = 0;
    uv_run(&loop->uv, UV_RUN_ONCE);
    loop->may_block = 0;
    if (loop->block_enter)
        block_left(loop); /* should the check phase not have run */
}

static void turn(sc_loop *loop, int timeout_ms);

void sc_loop_turn(sc_loop *loop, int timeout_ms)
{
    loop->in_turn = 1;
    turn(loop, timeout_ms);
    loop->in_turn = 0;
}

static void turn(sc_loop *loop, int timeout_ms)
{
    if (timeout_ms == 0 || loop->ready_head) {
        uv_run(&loop->uv, UV_RUN_NOWAIT);
        /* watchers the turn started reach epoll, and what waits on them is done */
        for (int i = 0; i < 4 && sc_loop_has_unpolled(loop); i++)
            uv_run(&loop->uv, UV_RUN_NOWAIT);
        return;
    }
    if (timeout_ms < 0) {
        run_once(loop);
        return;
    }
    uv_timer_t t;
    uv_timer_init(&loop->uv, &t);
    sc_timer_start(&t, on_turn_timeout, (uint64_t)timeout_ms, 0);
    run_once(loop);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop->uv, UV_RUN_NOWAIT); /* lets the close complete before t leaves scope */
}

double sc_loop_now(void) { return (double)uv_hrtime() / 1e9; }

sc_op *sc_loop_pop_ready(sc_loop *loop)
{
    sc_op *op = loop->ready_head;
    if (!op)
        return NULL;
    loop->ready_head = op->next_ready;
    if (!loop->ready_head)
        loop->ready_tail = NULL;
    op->next_ready = NULL;
    op->queued = 0;
    return op; /* the queue's reference passes to the caller */
}

void sc_op_init(sc_op *op, sc_loop *loop, const char *kind)
{
    op->loop = loop;
    op->kind = kind;
    op->refs = 1;
    op->next_live = loop->live_ops;
    if (loop->live_ops)
        loop->live_ops->prev_live = op;
    loop->live_ops = op;
    loop->n_live_ops++;
}

void sc_op_notify(sc_op *op)
{
    if (op->queued)
        return;
    sc_loop *loop = op->loop;
    op->queued = 1;
    op->refs++;
    if (loop->ready_tail)
        loop->ready_tail->next_ready = op;
    else
        loop->ready_head = op;
    loop->ready_tail = op;
    sc_loop_poke(loop);
}

void sc_op_finish(sc_op *op, const sc_err *err)
{
    if (op->done)
        return;
    op->done = 1;
    if (err)
        op->err = *err;
    else
        op->err.code = SC_OK;
    sc_op_notify(op);
}

void sc_op_ref(sc_op *op) { op->refs++; }

void sc_op_release(sc_op *op)
{
    if (--op->refs > 0)
        return;
    sc_loop *loop = op->loop;
    if (op->prev_live)
        op->prev_live->next_live = op->next_live;
    else
        loop->live_ops = op->next_live;
    if (op->next_live)
        op->next_live->prev_live = op->prev_live;
    loop->n_live_ops--;
    op->destroy(op);
}

void sc_op_abandon(sc_op *op)
{
    if (!op->done && op->cancel)
        op->cancel(op);
    sc_op_release(op);
}

/* sleep */

typedef struct {
    sc_op op;
    uv_timer_t timer;
} sc_sleep;

static void sleep_closed(uv_handle_t *h)
{
    sc_sleep *sl = h->data;
    sc_op_release(&sl->op);
}

static void sleep_fired(uv_timer_t *t)
{
    sc_sleep *sl = t->data;
    sc_op_finish(&sl->op, NULL);
    uv_close((uv_handle_t *)&sl->timer, sleep_closed);
}

static void sleep_cancel(sc_op *op)
{
    sc_sleep *sl = (sc_sleep *)op;
    uv_timer_stop(&sl->timer);
    sc_err err;
    sc_err_set(&err, SC_ECANCELED, "sleep canceled");
    sc_op_finish(op, &err);
    uv_close((uv_handle_t *)&sl->timer, sleep_closed);
}

static void sleep_destroy(sc_op *op) { free(op); }

sc_op *sc_sleep_start(sc_loop *loop, double sec)
{
    sc_sleep *sl = calloc(1, sizeof *sl);
    if (!sl)
        return NULL;
    sc_op_init(&sl->op, loop, "sleep");
    sl->op.cancel = sleep_cancel;
    sl->op.destroy = sleep_destroy;
    sl->op.refs++; /* the timer's reference, released when its handle has closed */
    uv_timer_init(&loop->uv, &sl->timer);
    sl->timer.data = sl;
    if (sec < 0)
        sec = 0;
    sc_timer_start(&sl->timer, sleep_fired, (uint64_t)(sec * 1000.0 + 0.5), 0);
    return &sl->op;
}

/* readable: a uv_poll on an fd of the embedder's (a pipe on stdin) */

typedef struct {
    sc_op op;
    uv_poll_t poll;
    int fd;
    int polling;
} sc_readable;

static void readable_closed(uv_handle_t *h)
{
    sc_readable *r = h->data;
    sc_op_release(&r->op);
}

static void readable_stop(sc_readable *r, const sc_err *err)
{
    sc_op_finish(&r->op, err);
    if (r->polling) {
        r->polling = 0;
        uv_poll_stop(&r->poll);
        uv_close((uv_handle_t *)&r->poll, readable_closed);
    }
}

static void readable_fired(uv_poll_t *p, int status, int events)
{
    (void)events;
    sc_readable *r = p->data;
    sc_err err;
    if (status < 0)
        sc_err_set(&err, SC_EIO, "fd %d: %s", r->fd, uv_strerror(status));
    readable_stop(r, status < 0 ? &err : NULL);
}

static void readable_cancel(sc_op *op)
{
    sc_err err;
    sc_err_set(&err, SC_ECANCELED, "wait for input canceled");
    readable_stop((sc_readable *)op, &err);
}

sc_op *sc_readable_start(sc_loop *loop, int fd)
{
    sc_readable *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    sc_op_init(&r->op, loop, "readable");
    r->op.cancel = readable_cancel;
    r->op.destroy = sleep_destroy;
    r->poll.data = r;
    r->fd = fd;
    /* a regular file or /dev/null cannot be polled (EPERM): it is always readable */
    if (uv_poll_init(&loop->uv, &r->poll, fd) != 0) {
        sc_op_finish(&r->op, NULL);
        return &r->op;
    }
    r->op.refs++; /* the handle's reference, released when it has closed */
    r->polling = 1;
    uv_poll_start(&r->poll, UV_READABLE | UV_DISCONNECT, readable_fired);
    return &r->op;
}
