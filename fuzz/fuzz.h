
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


#include "ngx_http_bytemark_module.h"

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

/* the pass-array helpers and renderings a lookup applies to an answer */
void bytemark_fuzz_exercise_answer(ngx_http_bytemark_answer_t *a);


#endif /* _BYTEMARK_FUZZ_H_INCLUDED_ */
