
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The call layer's own: what call.c and call_gate.c share.
 */

#ifndef _NGX_HTTP_BYTEMARK_CALL_PRIVATE_H_INCLUDED_
#define _NGX_HTTP_BYTEMARK_CALL_PRIVATE_H_INCLUDED_


#include "ngx_http_bytemark_call.h"


/* per worker, set at init_process */
extern const ngx_http_bytemark_call_observer_t  *ngx_http_bytemark_call_obs;
extern const ngx_http_bytemark_call_ops_t
    *ngx_http_bytemark_call_ops[NGX_HTTP_BYTEMARK_BACKENDS];

void ngx_http_bytemark_call_unstuck(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_call_report(ngx_http_bytemark_call_t *call,
    ngx_http_bytemark_outcome_t *o);


#endif /* _NGX_HTTP_BYTEMARK_CALL_PRIVATE_H_INCLUDED_ */
