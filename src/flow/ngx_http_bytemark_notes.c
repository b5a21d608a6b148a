
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The notes' background repair: a note (an ingest whose cache update failed
 * after the commit, ngx_http_bytemark_shm.c) stays until its user's cache
 * entry is deleted.  A lookup of that user deletes it (fill.c), but a user
 * nobody looks up would keep the note, and the notes' zone fills up over
 * incidents.  So every worker looks at the notes on a timer and deletes
 * their entries, one at a time on the thread pool: a silent MongoDB holds
 * at most one thread of each worker.  Each note taken is leased in the zone,
 * so that the workers share the work; a failed delete leaves the rest of
 * its batch to the lease's end.
 *
 * While the MongoDB breaker is open nothing is tried; when it lets a probe
 * through, one delete is that probe, so the breaker closes (and the notes
 * go) with no request at all once MongoDB answers again.
 */


#include "ngx_http_bytemark_flow.h"


/* how often a worker looks */
#define NGX_HTTP_BYTEMARK_NOTES_TICK   1000

/* the notes one worker takes at a time, and for how long */
#define NGX_HTTP_BYTEMARK_NOTES_BATCH  64
#define NGX_HTTP_BYTEMARK_NOTES_LEASE  10000


typedef struct {
    ngx_event_t                     ev;
    ngx_http_bytemark_main_conf_t  *bmcf;
    uint64_t                        users[NGX_HTTP_BYTEMARK_NOTES_BATCH];
    int64_t                         stamps[NGX_HTTP_BYTEMARK_NOTES_BATCH];
    ngx_uint_t                      n;
    ngx_uint_t                      next;
    ngx_uint_t                      busy;       /* a delete in flight */
} ngx_http_bytemark_notes_walk_t;


static void ngx_http_bytemark_notes_tick(ngx_event_t *ev);
static void ngx_http_bytemark_notes_take(ngx_http_bytemark_notes_walk_t *w);
static void ngx_http_bytemark_notes_delete(ngx_http_bytemark_notes_walk_t *w);
static void ngx_http_bytemark_notes_done(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o);


ngx_int_t
ngx_http_bytemark_notes_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_http_bytemark_notes_walk_t  *w;

    /* one walk per backend, each over its own notes */
    w = ngx_pcalloc(cycle->pool, sizeof(ngx_http_bytemark_notes_walk_t));
    if (w == NULL) {
        return NGX_ERROR;
    }

    w->bmcf = bmcf;
    bmcf->notes_walk = w;
    w->ev.handler = ngx_http_bytemark_notes_tick;
    w->ev.data = w;
    w->ev.log = cycle->log;

    /* a timer must not keep a worker from shutting down */
    w->ev.cancelable = 1;

    ngx_add_timer(&w->ev, NGX_HTTP_BYTEMARK_NOTES_TICK);

    return NGX_OK;
}


static void
ngx_http_bytemark_notes_tick(ngx_event_t *ev)
{
    ngx_http_bytemark_notes_walk_t  *w;

    w = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_add_timer(ev, NGX_HTTP_BYTEMARK_NOTES_TICK);

    if (!w->busy) {
        ngx_http_bytemark_notes_take(w);
    }
}


/* a new batch of notes, and the delete of the first one */

static void
ngx_http_bytemark_notes_take(ngx_http_bytemark_notes_walk_t *w)
{
    ngx_uint_t                      max;
    ngx_http_bytemark_main_conf_t  *bmcf;

    bmcf = w->bmcf;

    if (ngx_http_bytemark_call_gate(bmcf, NGX_HTTP_BYTEMARK_BREAKER_MONGO,
                                    NGX_HTTP_BYTEMARK_GATE_SKIP_OPEN)
        != NGX_OK)
    {
        return;
    }

    /* half open: one delete, as the probe */
    max = ngx_http_bytemark_breaker_closed(bmcf,
                                           NGX_HTTP_BYTEMARK_BREAKER_MONGO)
          ? NGX_HTTP_BYTEMARK_NOTES_BATCH : 1;

    w->n = ngx_http_bytemark_note_take(bmcf, NGX_HTTP_BYTEMARK_NOTES_LEASE,
                                       w->users, w->stamps, max);
    w->next = 0;

    if (w->n == 0) {
        return;
    }

    if (max == 1
        && !ngx_http_bytemark_breaker_allow(bmcf,
                                            NGX_HTTP_BYTEMARK_BREAKER_MONGO))
    {
        /* another call is the probe: the lease runs out meanwhile */
        w->n = 0;
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, w->ev.log, 0,
                   "bytemark: deleting the entries of %ui noted users", w->n);

    ngx_http_bytemark_notes_delete(w);
}


static void
ngx_http_bytemark_notes_delete(ngx_http_bytemark_notes_walk_t *w)
{
    ngx_http_bytemark_call_t  *call;

    call = ngx_http_bytemark_call_create(NULL, NGX_HTTP_BYTEMARK_BACKEND_MONGO,
                                         NGX_HTTP_BYTEMARK_OP_DELETE,
                                         "mongo delete of a noted entry",
                                         ngx_http_bytemark_mongo_purge,
                                         ngx_http_bytemark_notes_done, 0);
    if (call == NULL) {
        w->n = 0;
        return;
    }

    call->bmcf = w->bmcf;
    call->user_id = w->users[w->next];
    ngx_http_bytemark_call_delete(call)->stamp = w->stamps[w->next];
    call->always_done = 1;
    call->report = NGX_HTTP_BYTEMARK_REPORT_FOUND;

    if (ngx_http_bytemark_call_start(call, 0) != NGX_OK) {
        w->n = 0;
        return;
    }

    w->busy = 1;
}


/* event loop: one delete is over; the next follows at once if it worked */

static void
ngx_http_bytemark_notes_done(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o)
{
    ngx_uint_t                       ok;
    ngx_http_bytemark_notes_walk_t  *w;

    w = call->bmcf->notes_walk;
    w->busy = 0;

    ok = (o->result == NGX_HTTP_BYTEMARK_FOUND);

    if (!ok) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "bytemark: %s for user %uL failed, will retry: %s",
                      call->name, call->user_id, o->error);
        w->n = 0;
        return;
    }

    ngx_http_bytemark_note_clear(call->bmcf, call->user_id,
                                 ngx_http_bytemark_call_delete(call)->stamp);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "bytemark: noted entry of user %uL deleted, note cleared",
                   call->user_id);

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (++w->next < w->n) {
        ngx_http_bytemark_notes_delete(w);
        return;
    }

    ngx_http_bytemark_notes_take(w);
}
