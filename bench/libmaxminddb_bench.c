/*
 * The reference for the in-process lookup benchmark: libmaxminddb (the C
 * reader MaxMind maintains) parsing each address string, looking it up and
 * decoding its country the way the geo-service does (country.iso_code,
 * else registered_country.iso_code). Same input file, same timing scheme as
 * geo-service/benches/lookup.rs: a warm-up, then RUNS passes over all
 * addresses, median and min per pass.
 *
 * Build and run: scripts/bench.sh
 */
#include <maxminddb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RUNS 200

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static volatile size_t sink;

static void pass(MMDB_s *db, char **ips, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int gai_error, mmdb_error;
        MMDB_lookup_result_s result = MMDB_lookup_string(db, ips[i], &gai_error, &mmdb_error);
        if (gai_error || mmdb_error || !result.found_entry) continue;
        MMDB_entry_data_s data;
        int status = MMDB_get_value(&result.entry, &data, "country", "iso_code", NULL);
        if (status != MMDB_SUCCESS || !data.has_data)
            status = MMDB_get_value(&result.entry, &data, "registered_country", "iso_code", NULL);
        if (status == MMDB_SUCCESS && data.has_data && data.type == MMDB_DATA_TYPE_UTF8_STRING)
            sink += data.data_size + (size_t)data.utf8_string[0];
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s DATABASE.mmdb IPS.txt\n", argv[0]);
        return 2;
    }
    MMDB_s db;
    if (MMDB_open(argv[1], MMDB_MODE_MMAP, &db) != MMDB_SUCCESS) {
        fprintf(stderr, "cannot open %s\n", argv[1]);
        return 1;
    }
    FILE *f = fopen(argv[2], "r");
    if (!f) {
        perror(argv[2]);
        return 1;
    }
    size_t cap = 16384, n = 0;
    char **ips = malloc(cap * sizeof *ips);
    char line[128];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!*line) continue;
        if (n == cap) ips = realloc(ips, (cap *= 2) * sizeof *ips);
        ips[n++] = strdup(line);
    }
    fclose(f);

    for (int i = 0; i < RUNS / 10; i++) pass(&db, ips, n);
    double times[RUNS];
    for (int i = 0; i < RUNS; i++) {
        double start = now_ns();
        pass(&db, ips, n);
        times[i] = now_ns() - start;
    }
    qsort(times, RUNS, sizeof times[0], cmp);
    printf("%-44s median %9.3f ms  p99 %9.3f ms  min %9.3f ms  (%.0f ns/address median, %.0f min)\n",
           "libmaxminddb (country, mmap)", times[RUNS / 2] / 1e6, times[RUNS * 99 / 100] / 1e6, times[0] / 1e6,
           times[RUNS / 2] / n, times[0] / n);
    MMDB_close(&db);
    return 0;
}
