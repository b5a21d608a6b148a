
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The policy every call of every backend goes through, on the event loop:
 * the gate before a call is posted (too many stuck calls to its server,
 * its breaker), the stuck calls themselves, and what the breaker hears of
 * an outcome.  The breakers and the metrics are the shm layer's, above:
 * this layer reaches them through the observer shm registers
 * (ngx_http_bytemark_call_observe()).
 */


#include "ngx_http_bytemark_call_private.h"


/* per worker: the breakers and metrics (ngx_http_bytemark_call_observe) */
const ngx_http_bytemark_call_observer_t  *ngx_http_bytemark_call_obs;

static ngx_http_bytemark_backend_e ngx_http_bytemark_call_backend(
    ngx_uint_t slot);


/* the call outlived a budget: it holds its thread (or connection) on */

void
ngx_http_bytemark_call_stuck(ngx_http_bytemark_call_t *call)
{
    if (!call->stuck) {
        call->stuck = 1;
        call->bmcf->stuck[call->slot]++;

        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "bytemark: call %p \"%s\" stuck, %ui on its server",
                       call, call->name, call->bmcf->stuck[call->slot]);
    }
}


/* its operation is over: the call holds its thread (or connection) no more */

void
ngx_http_bytemark_call_unstuck(ngx_http_bytemark_call_t *call)
{
    call->bmcf->stuck[call->slot]--;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "bytemark: call %p \"%s\" returned, %ui stuck on its "
                   "server", call, call->name,
                   call->bmcf->stuck[call->slot]);
}


void
ngx_http_bytemark_call_observe(
    const ngx_http_bytemark_call_observer_t *observer)
{
    ngx_http_bytemark_call_obs = observer;
}


/*
 * May a call to this breaker slot be posted now?  NGX_OK: yes;
 * NGX_BUSY: too many abandoned calls to its server still hold threads (or
 * connections); NGX_DECLINED: its breaker is open.  What a refusal reports
 * is the caller's policy, the same for every backend.
 */

ngx_int_t
ngx_http_bytemark_call_gate(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t slot, ngx_uint_t policy)
{
    ngx_int_t                                 rc;
    const ngx_http_bytemark_call_observer_t  *obs;

    obs = ngx_http_bytemark_call_obs;
    rc = NGX_OK;

    if (!(policy & NGX_HTTP_BYTEMARK_GATE_NO_STUCK)
        && bmcf->stuck[slot] >= bmcf->stuck_calls)
    {
        rc = NGX_BUSY;

        if (obs && (policy & NGX_HTTP_BYTEMARK_GATE_STUCK_FAILS)) {
            /* calls that hang are failures too: they open the breaker */
            obs->breaker_result(bmcf, slot, 0,
                                NGX_HTTP_BYTEMARK_CALL_STUCK_COST);
        }

    } else if (obs == NULL) {
        /* no breakers */

    } else if (policy & NGX_HTTP_BYTEMARK_GATE_PROBE) {
        if (!obs->breaker_allow(bmcf, slot)) {
            rc = NGX_DECLINED;
        }

    } else if (policy & NGX_HTTP_BYTEMARK_GATE_SKIP_OPEN) {
        if (obs->breaker_is_open(bmcf, slot)) {
            rc = NGX_DECLINED;
        }
    }

    if (obs
        && ((rc == NGX_BUSY && (policy & NGX_HTTP_BYTEMARK_GATE_COUNT_STUCK))
            || (rc == NGX_DECLINED
                && (policy & NGX_HTTP_BYTEMARK_GATE_COUNT_OPEN))))
    {
        obs->backend_error(ngx_http_bytemark_call_backend(slot),
                           NGX_HTTP_BYTEMARK_ERR_BREAKER_OPEN);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "bytemark: call gate of breaker slot %ui: %i "
                   "(%ui stuck)", slot, rc, bmcf->stuck[slot]);

    return rc;
}


/* the backend of a breaker slot: MongoDB's, or one of the MySQL servers */

static ngx_http_bytemark_backend_e
ngx_http_bytemark_call_backend(ngx_uint_t slot)
{
    const ngx_http_bytemark_call_ops_t  *ops;

    ops = ngx_http_bytemark_call_ops[NGX_HTTP_BYTEMARK_BACKEND_MYSQL];

    return (ops && slot >= ops->slot) ? NGX_HTTP_BYTEMARK_BACKEND_MYSQL
                                      : NGX_HTTP_BYTEMARK_BACKEND_MONGO;
}


/* the breaker hears of the call's outcome, as its policy says (REPORT_*) */

void
ngx_http_bytemark_call_report(ngx_http_bytemark_call_t *call,
    ngx_http_bytemark_outcome_t *o)
{
    ngx_uint_t                                ok;
    ngx_http_bytemark_result_e                result;
    const ngx_http_bytemark_call_observer_t  *obs;

    obs = ngx_http_bytemark_call_obs;

    if (obs == NULL) {
        return;
    }

    result = o->result;

    switch (call->report) {

    case NGX_HTTP_BYTEMARK_REPORT_FOUND:
        ok = (result == NGX_HTTP_BYTEMARK_FOUND);
        break;

    case NGX_HTTP_BYTEMARK_REPORT_ANSWER:
        if (result == NGX_HTTP_BYTEMARK_NO_THREAD) {
            return;
        }

        ok = (result != NGX_HTTP_BYTEMARK_FAILED
              && result != NGX_HTTP_BYTEMARK_TIMED_OUT);
        break;

    case NGX_HTTP_BYTEMARK_REPORT_TIMEOUT:
        if (result != NGX_HTTP_BYTEMARK_TIMED_OUT) {
            return;
        }

        ok = 0;
        break;

    default:
        return;
    }

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, call->log, 0,
                   "bytemark: %s for user %uL: breaker slot %ui hears %s",
                   call->name, call->user_id, call->slot,
                   ok ? "a success" : "a failure");

    obs->breaker_result(call->bmcf, call->slot, ok, (int64_t) o->elapsed);
}
