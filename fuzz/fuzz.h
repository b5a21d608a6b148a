
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Shared by the fuzz targets (fuzz/fuzz_*.c): the module's own sources are
 * compiled as they are (src/ is never touched for fuzzing), with the nginx
 * core files they use and the stubs of fuzz/stubs.c for the rest.
 *
 * Each target defines LLVMFuzzerTestOneInput(); it is linked either with
 * libFuzzer (-fsanitize=fuzzer, scripts/fuzz.sh build) or with fuzz/driver.c,
 * a plain main() that runs files and directories through it once
 * (scripts/fuzz.sh regress, t/60-fuzz-regressions.t).
 */

#ifndef _BYTEMARK_FUZZ_H_INCLUDED_
#define _BYTEMARK_FUZZ_H_INCLUDED_


#include "ngx_http_bytemark_http.h"

#include <bson/bson.h>


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* set up once: the log, ngx_pagesize, ngx_cycle (stubs.c) */
void bytemark_fuzz_init(void);
extern ngx_log_t  bytemark_fuzz_log;

/* an invariant of the code under test does not hold: abort with a message */
#define FUZZ_CHECK(cond, ...)                                                 \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "fuzz invariant failed at %s:%d: %s: ",           \
                    __FILE__, __LINE__, #cond);                               \
            fprintf(stderr, __VA_ARGS__);                                     \
            fprintf(stderr, "\n");                                            \
            abort();                                                          \
        }                                                                     \
    } while (0)

/* valid UTF-8 (jansson's own test: json_stringn refuses anything else) */
int bytemark_fuzz_utf8(const char *s, size_t len);

/*
 * The differential checks of a cache document (common.c): entry_from_bson()
 * and render_bson() against the old jansson read path (reference.c), and
 * what a lookup does with an accepted answer (filters, pass lookups).
 */
void bytemark_fuzz_check_document(const bson_t *doc);

/* a rendered list against the reference array it must be the dump of */
void bytemark_fuzz_check_list(ngx_http_bytemark_passes_t *list, json_t *ref,
    const char *what);

/* abort with both texts shown */
void bytemark_fuzz_mismatch(const char *file, int line, const char *what,
    const u_char *got, size_t got_len, const char *want, size_t want_len);

#define FUZZ_SAME_TEXT(what, got, got_len, want)                              \
    do {                                                                      \
        const char  *want_ = (want);                                          \
        size_t       wlen_ = want_ ? strlen(want_) : 0;                       \
        if (want_ == NULL || (size_t) (got_len) != wlen_                      \
            || memcmp((got), want_, wlen_) != 0)                              \
        {                                                                     \
            bytemark_fuzz_mismatch(__FILE__, __LINE__, (what),                \
                                   (const u_char *) (got), (got_len),         \
                                   want_, wlen_);                             \
        }                                                                     \
    } while (0)


/* reference.c: the old read path, the oracle of the checks */

typedef struct {
    json_t       *passes[2];    /* arrays of objects; [] when absent */
    int64_t       timestamp;
    unsigned      has_timestamp:1;
    unsigned      incomplete:1;
} bytemark_ref_entry_t;

int bytemark_ref_strict(void);
json_t *bytemark_ref_bson_to_json(const bson_iter_t *it, ngx_uint_t depth);
ngx_int_t bytemark_ref_entry(const bson_t *doc, bytemark_ref_entry_t *e);
void bytemark_ref_entry_free(bytemark_ref_entry_t *e);
json_t *bytemark_ref_filter(json_t *passes, ngx_array_t *statuses);
json_t *bytemark_ref_find(json_t *passes[2], u_char *uuid,
    ngx_uint_t *version, size_t *index);
json_t *bytemark_ref_payload(const u_char *text, size_t len);
json_t *bytemark_ref_row(ngx_http_bytemark_pass_row_t *row);
char *bytemark_ref_dump(json_t *v, size_t flags);


#endif /* _BYTEMARK_FUZZ_H_INCLUDED_ */
