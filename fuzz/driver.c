
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * A plain main() for the fuzz targets, without libFuzzer: runs every file
 * named on the command line (directories: every regular file in them, in
 * name order) through LLVMFuzzerTestOneInput() once. Built with ASan and
 * UBSan by scripts/fuzz.sh regress, which t/60-fuzz-regressions.t runs over
 * fuzz/corpus/<target>/ and fuzz/regressions/<target>/.
 */

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);


static unsigned long  runs;


static int
run_file(const char *path)
{
    FILE     *f;
    long      size;
    uint8_t  *buf;

    f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return 1;
    }

    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fseek(f, 0, SEEK_SET);

    /* exactly the file's size, as libFuzzer hands its inputs over */
    buf = malloc(size > 0 ? (size_t) size : 1);
    if (buf == NULL || fread(buf, 1, (size_t) size, f) != (size_t) size) {
        fprintf(stderr, "%s: cannot read\n", path);
        fclose(f);
        free(buf);
        return 1;
    }

    fclose(f);

    if (getenv("BYTEMARK_FUZZ_VERBOSE")) {
        fprintf(stderr, "running %s (%ld bytes)\n", path, size);
    }

    LLVMFuzzerTestOneInput(buf, (size_t) size);
    runs++;

    free(buf);
    return 0;
}


static int
cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


static int
run_path(const char *path)
{
    int             rc;
    DIR            *d;
    char          **names, full[4096];
    size_t          n, cap, i;
    struct stat     st;
    struct dirent  *e;

    if (stat(path, &st) != 0) {
        perror(path);
        return 1;
    }

    if (!S_ISDIR(st.st_mode)) {
        return run_file(path);
    }

    d = opendir(path);
    if (d == NULL) {
        perror(path);
        return 1;
    }

    names = NULL;
    n = 0;
    cap = 0;

    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }

        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            names = realloc(names, cap * sizeof(char *));
        }

        names[n++] = strdup(e->d_name);
    }

    closedir(d);
    qsort(names, n, sizeof(char *), cmp);

    rc = 0;

    for (i = 0; i < n; i++) {
        snprintf(full, sizeof(full), "%s/%s", path, names[i]);

        if (stat(full, &st) == 0 && S_ISREG(st.st_mode)) {
            rc |= run_file(full);
        }

        free(names[i]);
    }

    free(names);
    return rc;
}


int
main(int argc, char **argv)
{
    int  i, rc;

    LLVMFuzzerInitialize(&argc, &argv);

    rc = 0;

    for (i = 1; i < argc; i++) {
        rc |= run_path(argv[i]);
    }

    printf("%s: %lu inputs ran clean\n", argv[0], runs);

    return rc;
}
