/* loop.h - the one event loop (libuv) and the operations it completes.
 *
 * Every asynchronous piece of work (connecting a session, running a command, sleeping) is an sc_op.
 * When an op completes or has news (streamed output), it is queued on the loop's ready list; the
 * embedder (the Lua binding) collects that list after each turn of the loop and resumes whoever
 * waits. An op is reference counted: one reference for the embedder's handle, one for the core
 * while the work is under way. */
#ifndef SC_LOOP_H
#define SC_LOOP_H

#include <uv.h>

#include "sc.h"

typedef struct sc_loop sc_loop;
typedef struct sc_op sc_op;
typedef struct sc_deferred sc_deferred;
typedef struct sc_cleanup sc_cleanup;

/* Work asked for "soon": run once on the next turn of the loop, however often it was asked for
 * before that. The layers above (sessions) register theirs; the loop knows nothing of them. */
struct sc_deferred {
    void (*run)(sc_deferred *d, int canceled); /* canceled: the loop is being freed */
    sc_deferred *next;
    int queued;
};

/* Something to release when the loop is freed (a cache kept per loop). */
struct sc_cleanup {
    void (*run)(sc_cleanup *c);
    sc_cleanup *next;
};

struct sc_op {
    sc_loop *loop;
    const char *kind; /* "connect", "exec", "sleep" */
    int done;         /* completed: err holds the outcome */
    sc_err err;
    int refs;
    int queued; /* on the loop's ready list */
    sc_op *next_ready;
    sc_op *prev_live, *next_live;
    void (*cancel)(sc_op *op);  /* stop the work early (the handle was dropped); may be NULL */
    void (*destroy)(sc_op *op); /* free the op's memory once both references are gone */
    int (*has_news)(sc_op *op); /* news the embedder may take before the op is done; may be NULL */
};

struct sc_loop {
    uv_loop_t uv;
    sc_op *ready_head, *ready_tail;
    sc_op *live_ops;
    int live_sessions;
    int live_channels;
    int n_live_ops;
    uv_idle_t defer_idle;       /* runs the deferred work */
    sc_deferred *deferred;      /* waiting for the next turn */
    sc_deferred *running;       /* the ones of this turn not yet run */
    sc_cleanup *cleanups;       /* run by sc_loop_free */
    struct sc_keycache *keys;   /* private keys already decrypted (auth.c) */
    struct sc_proxies *proxies; /* ProxyCommands still running (proxy.c) */
    uv_async_t wakeup;          /* sc_interrupt: makes a blocked turn return */
    uv_async_t poke;            /* sc_loop_poke: makes the backend fd readable */
    int hosted;                 /* a host loop polls the backend fd (sc_loop_set_hosted) */
    int in_turn;                /* inside sc_loop_turn */
    /* sc_loop_on_block: libuv's prepare and check phases, around the poll of each turn */
    uv_prepare_t block_prepare;
    uv_check_t block_check;
    void (*block_enter)(void *ud), (*block_leave)(void *ud);
    void *block_ud;
    int may_block; /* a turn that waits for events runs */
    int idle_ran;  /* the deferred work ran in this iteration of the turn */
    int blocking;  /* block_enter ran, block_leave not yet */
};

sc_loop *sc_loop_new(void);
/* Closes what is left, runs the loop until every handle is closed, frees the loop. */
void sc_loop_free(sc_loop *loop);
/* Runs one turn of the loop: waits up to timeout_ms for an event (0: poll only; -1: until one). */
void sc_loop_turn(sc_loop *loop, int timeout_ms);
/* Whether watchers started since the last poll are not yet in the backend fd's set (a host loop
 * must then step again before it blocks on that fd). */
int sc_loop_has_unpolled(const sc_loop *loop);
/* Work queued outside a turn (deferred work, an op made ready, a new watcher the backend fd does
 * not see yet): when a host loop polls that fd (sc_loop_set_hosted), makes it readable, so that
 * the host steps soon. Called by sc_loop_defer and sc_op_notify, and by the binding for new ops. */
void sc_loop_poke(sc_loop *loop);
void sc_loop_set_hosted(sc_loop *loop, int hosted);
/* enter(ud) runs right before a turn's poll that may wait (a turn with a timeout, and nothing
 * due at once), leave(ud) right after that poll; NULL enter stops both. Most turns of a busy
 * loop have work due and do not wait: what guards only a wait (a signal handler) costs nothing
 * on those. */
void sc_loop_on_block(sc_loop *loop, void (*enter)(void *ud), void (*leave)(void *ud), void *ud);
/* Pops the next op queued as ready, or NULL. The caller must not release it before using it. */
sc_op *sc_loop_pop_ready(sc_loop *loop);
double sc_loop_now(void); /* seconds, monotonic */

/* Runs d on the next turn (once, however often asked before that). */
void sc_loop_defer(sc_loop *loop, sc_deferred *d);
/* Takes d back if it is waiting (its owner is going away). */
void sc_loop_undefer(sc_loop *loop, sc_deferred *d);

/* Runs c when the loop is freed (before its handles are closed). */
void sc_loop_at_free(sc_loop *loop, sc_cleanup *c);

/* Async-signal-safe: makes the turn under way in the process's loop return at once, so that an
 * interpreter's SIGINT hook gets to run (sshlua calls it from its signal handler). */
void sc_interrupt(void);

void sc_op_init(sc_op *op, sc_loop *loop, const char *kind);
void sc_op_notify(sc_op *op);                    /* queue as ready (news, or done) */
void sc_op_finish(sc_op *op, const sc_err *err); /* mark done (err NULL: success) and notify */
void sc_op_ref(sc_op *op);
void sc_op_release(sc_op *op);
/* The embedder drops its handle: cancels unfinished work, then releases. */
void sc_op_abandon(sc_op *op);

/* Starts a timer ms from now. libuv counts from the time cached at the last turn of the loop,
 * which is stale when the embedder did other work between turns (a script that ran a long
 * command, then connects): refresh it first, or a deadline would be in the past already. */
void sc_timer_start(uv_timer_t *t, uv_timer_cb cb, uint64_t ms, uint64_t repeat);

/* A sleep that completes after sec seconds. */
sc_op *sc_sleep_start(sc_loop *loop, double sec);

/* Completes once fd has something to read (or its end, or an error); at once for an fd that
 * cannot be watched (a regular file). */
sc_op *sc_readable_start(sc_loop *loop, int fd);

#endif
