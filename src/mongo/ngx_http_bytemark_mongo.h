
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The MongoDB side, what the layers above call: the per-worker client pool,
 * lookups batched per thread task, the cache fill and the writes.  Each is
 * a call's run() on the thread pool.  The driver's own types stay in
 * ngx_http_bytemark_mongo_private.h.
 */

#ifndef _NGX_HTTP_BYTEMARK_MONGO_H_INCLUDED_
#define _NGX_HTTP_BYTEMARK_MONGO_H_INCLUDED_


#include "ngx_http_bytemark_shm.h"


/* backends with a MongoDB URI, the default one included */
#define NGX_HTTP_BYTEMARK_MONGO_BACKENDS  64


/* mongo */
ngx_int_t ngx_http_bytemark_mongo_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf);
void ngx_http_bytemark_mongo_exit_process(ngx_http_bytemark_main_conf_t *bmcf);
const char *ngx_http_bytemark_mongo_version(void);
ngx_int_t ngx_http_bytemark_mongo_check_uri(ngx_str_t *uri, char *err,
    size_t size);
void ngx_http_bytemark_mongo_fill(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_mongo_ingest(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_mongo_purge(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_mongo_cleanup(ngx_http_bytemark_call_t *call);


#endif /* _NGX_HTTP_BYTEMARK_MONGO_H_INCLUDED_ */
