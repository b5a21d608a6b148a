
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The MySQL side, what the layers above call: the per-worker pools and the
 * statements of a read and of an ingest, driven on the event loop with
 * Connector/C's non-blocking API.  Its own types stay in
 * ngx_http_bytemark_mysql_private.h.
 */

#ifndef _NGX_HTTP_BYTEMARK_MYSQL_H_INCLUDED_
#define _NGX_HTTP_BYTEMARK_MYSQL_H_INCLUDED_


#include "ngx_http_bytemark_shm.h"


/* mysql */
ngx_int_t ngx_http_bytemark_mysql_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf);
void ngx_http_bytemark_mysql_exit_process(ngx_http_bytemark_main_conf_t *bmcf);
const char *ngx_http_bytemark_mysql_version(void);
void ngx_http_bytemark_mysql_tickets(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_mysql_pass(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_mysql_ingest(ngx_http_bytemark_call_t *call);
ngx_int_t ngx_http_bytemark_mysql_post(ngx_http_bytemark_call_t *call);

/* which server a call may go to (mysql_server.c) */
ngx_int_t ngx_http_bytemark_mysql_server_usable(
    ngx_http_bytemark_main_conf_t *bmcf, ngx_uint_t i, ngx_uint_t policy);
ngx_str_t *ngx_http_bytemark_mysql_server_name(
    ngx_http_bytemark_main_conf_t *bmcf, ngx_uint_t i);
/* which server a read asks (mysql_choose.c) */
ngx_uint_t ngx_http_bytemark_mysql_read_first(
    ngx_http_bytemark_main_conf_t *bmcf, uint64_t user_id);
ngx_uint_t ngx_http_bytemark_mysql_read_server(
    ngx_http_bytemark_main_conf_t *bmcf, ngx_uint_t first, ngx_uint_t k);


#endif /* _NGX_HTTP_BYTEMARK_MYSQL_H_INCLUDED_ */
