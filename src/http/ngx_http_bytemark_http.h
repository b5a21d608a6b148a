
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The HTTP surface, the top layer: the module and its directives (module.c,
 * conf.c), client input (input.c), one thin handler per endpoint
 * (tickets.c, pass.c, ingest.c, purge.c, status.c, health.c), $bytemark_*
 * variables
 * (variables.c).
 */

#ifndef _NGX_HTTP_BYTEMARK_HTTP_H_INCLUDED_
#define _NGX_HTTP_BYTEMARK_HTTP_H_INCLUDED_


#include "ngx_http_bytemark_flow.h"


/* conf */
char *ngx_http_bytemark_set_mysql(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_mongo_uri(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_thread_pool(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_breaker(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_collection(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_table(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_handler(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_cleanup(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_mysql_read(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_read_your_writes(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_bytemark_check_threads(ngx_conf_t *cf);
char *ngx_http_bytemark_init_backend_conf(ngx_conf_t *cf,
    ngx_http_bytemark_main_conf_t *bmcf);

/* upstream: named backends */
char *ngx_http_bytemark_upstream(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_init_upstreams(ngx_conf_t *cf,
    ngx_http_bytemark_main_conf_t *http);
ngx_http_bytemark_main_conf_t *ngx_http_bytemark_find_backend(ngx_conf_t *cf,
    ngx_str_t *name);
ngx_str_t *ngx_http_bytemark_backend_name(ngx_http_bytemark_main_conf_t *bmcf);

/* secrets in files, TLS files (ngx_http_bytemark_secrets.c) */
char *ngx_http_bytemark_set_mongo_uri_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_mysql_ssl(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_ssl_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_mysql_password_file(ngx_conf_t *cf,
    ngx_http_bytemark_mysql_server_t *srv);
char *ngx_http_bytemark_check_mysql_ssl(ngx_conf_t *cf,
    ngx_http_bytemark_main_conf_t *bmcf);
void *ngx_http_bytemark_create_main_conf(ngx_conf_t *cf);
char *ngx_http_bytemark_init_main_conf(ngx_conf_t *cf, void *conf);
void *ngx_http_bytemark_create_loc_conf(ngx_conf_t *cf);
char *ngx_http_bytemark_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);

/* input */
ngx_int_t ngx_http_bytemark_parse_user_id(ngx_str_t *s, uint64_t *id);
ngx_int_t ngx_http_bytemark_parse_filter(ngx_http_request_t *r,
    ngx_http_bytemark_filter_t *f);
ngx_http_bytemark_ctx_t *ngx_http_bytemark_request_init(
    ngx_http_request_t *r, ngx_uint_t handler, ngx_uint_t methods,
    const char *allow, ngx_int_t *rc);
ngx_int_t ngx_http_bytemark_percent_decode(ngx_str_t *src, u_char *dst,
    size_t *len);

/* handlers */
ngx_int_t ngx_http_bytemark_tickets_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_bytemark_pass_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_bytemark_ingest_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_bytemark_purge_handler(ngx_http_request_t *r);

/* status */
char *ngx_http_bytemark_set_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_bytemark_status_handler(ngx_http_request_t *r);

/* health */
char *ngx_http_bytemark_set_health(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_health_check(ngx_conf_t *cf,
    ngx_http_bytemark_main_conf_t *bmcf, ngx_http_bytemark_loc_conf_t *conf);
ngx_int_t ngx_http_bytemark_health_handler(ngx_http_request_t *r);

/* variables */
ngx_int_t ngx_http_bytemark_add_variables(ngx_conf_t *cf);


#endif /* _NGX_HTTP_BYTEMARK_HTTP_H_INCLUDED_ */
