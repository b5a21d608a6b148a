
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Target fuzz_bson: arbitrary bytes as a cache document.
 *
 * The bytes go to bson_init_static() as they are, except that the length
 * prefix is set to the input's size (otherwise almost every mutation would
 * die at the first check); the seeds are real documents written by pymongo.
 * Then what a MongoDB lookup does with a document (mongo.c), checked
 * against the old read path (common.c, reference.c): entry_from_bson(),
 * and on success the pass lists' texts, their items, filters and pass
 * lookups; and render_bson() on every top-level element, whatever its key.
 */

#include "fuzz.h"


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;

    bytemark_fuzz_init();
    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bson_t     doc;
    uint8_t   *buf;
    uint32_t   len;

    bytemark_fuzz_init();

    if (size < 5 || size > 16 * 1024 * 1024) {
        return 0;
    }

    /* an exact-size copy: ASan sees any read past the end */
    buf = malloc(size);
    memcpy(buf, data, size);
    len = (uint32_t) size;
    memcpy(buf, &len, 4);    /* little-endian, as BSON */

    if (bson_init_static(&doc, buf, size)) {
        bytemark_fuzz_check_document(&doc);
    }

    free(buf);

    return 0;
}
