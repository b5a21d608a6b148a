
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Which MySQL server a call may go to: its passive health (max_fails=,
 * fail_timeout=: shm/ngx_http_bytemark_passive.c) and its breaker with the
 * calls stuck on it (the call layer's gate).  The selection of servers
 * asks here, server by server.
 */


#include "ngx_http_bytemark_mysql_private.h"


/*
 * May a call go to server #i now?  NGX_OK: yes (perhaps as the probe of a
 * server that was down); NGX_DECLINED: the server is out of rotation, or
 * its breaker is open; NGX_BUSY: too many calls stuck on it.  A server
 * that is down is skipped before the breaker is asked, and the health
 * probe is claimed only once the breaker lets the call through, so that a
 * probe is never claimed by a call that does not go.
 */

ngx_int_t
ngx_http_bytemark_mysql_server_usable(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t i, ngx_uint_t policy)
{
    ngx_int_t   rc;
    ngx_uint_t  slot;

    slot = NGX_HTTP_BYTEMARK_BREAKER_MYSQL + i;

    if (!ngx_http_bytemark_health_allow(bmcf, slot, 0)) {
        rc = NGX_DECLINED;
        goto down;
    }

    rc = ngx_http_bytemark_call_gate(bmcf, slot, policy);

    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_bytemark_health_allow(bmcf, slot, 1)) {
        return NGX_OK;
    }

    rc = NGX_DECLINED;

down:

    /* skipped as an open breaker is: the backend error "breaker_open" */
    if (policy & NGX_HTTP_BYTEMARK_GATE_COUNT_OPEN) {
        ngx_http_bytemark_metrics_backend_error(
                                          NGX_HTTP_BYTEMARK_BACKEND_MYSQL,
                                          NGX_HTTP_BYTEMARK_ERR_BREAKER_OPEN);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "bytemark: mysql server #%ui is down, skipped", i + 1);

    return rc;
}


/* server #i as written ("addr:port", "unix:/path"), for logs and variables */

ngx_str_t *
ngx_http_bytemark_mysql_server_name(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t i)
{
    ngx_http_bytemark_mysql_server_t  *srv;

    srv = bmcf->mysql_servers->elts;

    return &srv[i].name;
}
