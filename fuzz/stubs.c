
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * What the fuzzed sources need from nginx beyond the core files compiled
 * with them (ngx_string.c, ngx_palloc.c, ngx_array.c, ngx_alloc.c,
 * ngx_http_parse.c), and the functions of the module's other files that
 * input.c refers to but the targets never reach (they abort if called).
 */

#include "fuzz.h"


ngx_log_t                bytemark_fuzz_log;
static ngx_cycle_t       bytemark_fuzz_cycle;
volatile ngx_cycle_t    *ngx_cycle = &bytemark_fuzz_cycle;

ngx_module_t             ngx_http_bytemark_module;
/* ngx_http_bytemark_http_conf() (core.c) names it; no target calls that */
ngx_module_t             ngx_http_module;


void
bytemark_fuzz_init(void)
{
    static int  done;

    if (done) {
        return;
    }

    done = 1;

    ngx_pagesize = getpagesize();
    ngx_cacheline_size = NGX_CPU_CACHE_LINE;

    for (ngx_pagesize_shift = 0; (1UL << ngx_pagesize_shift) < ngx_pagesize;
         ngx_pagesize_shift++) { /* void */ }

    bytemark_fuzz_log.log_level = NGX_LOG_EMERG;
    bytemark_fuzz_cycle.log = &bytemark_fuzz_log;

    /* the module's ctx index: any slot of a fake request's ctx array */
    ngx_http_bytemark_module.ctx_index = 0;
}


void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
    (void) level;
    (void) log;
    (void) err;
    (void) fmt;
}


#define BYTEMARK_FUZZ_UNREACHED(name)                                         \
    fprintf(stderr, "fuzz: %s is not expected to be called\n", name);         \
    abort()


ngx_int_t
ngx_http_complex_value(ngx_http_request_t *r, ngx_http_complex_value_t *val,
    ngx_str_t *value)
{
    (void) r; (void) val; (void) value;
    BYTEMARK_FUZZ_UNREACHED("ngx_http_complex_value");
}


ngx_int_t
ngx_http_discard_request_body(ngx_http_request_t *r)
{
    (void) r;
    BYTEMARK_FUZZ_UNREACHED("ngx_http_discard_request_body");
}


ngx_int_t
ngx_http_bytemark_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message)
{
    (void) r; (void) status; (void) code; (void) message;
    BYTEMARK_FUZZ_UNREACHED("ngx_http_bytemark_send_error");
}


ngx_int_t
ngx_http_bytemark_send_not_allowed(ngx_http_request_t *r, const char *allow)
{
    (void) r; (void) allow;
    BYTEMARK_FUZZ_UNREACHED("ngx_http_bytemark_send_not_allowed");
}


ngx_int_t
ngx_http_bytemark_request_cleanup(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx)
{
    (void) r; (void) ctx;
    BYTEMARK_FUZZ_UNREACHED("ngx_http_bytemark_request_cleanup");
}
