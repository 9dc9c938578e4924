/* The single-process communicator and the sharding arithmetic (the MPI
 * communicator is exercised by tests/cli/test_dist.sh under mpirun). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/dist.h"
#include "test.h"

TEST(dist_single_collectives) {
    ss_comm *c;
    CHECK_OK(ss_comm_open_single(&c));
    CHECK(ss_comm_rank(c) == 0 && ss_comm_size(c) == 1);
    CHECK(!strcmp(ss_comm_backend(c), "single"));
    CHECK(strlen(ss_comm_host(c, 0)) > 0);
    CHECK(!strcmp(ss_comm_host(c, 5), "?"));
    CHECK_OK(ss_comm_barrier(c));

    int64_t iv[3] = {1, -2, INT64_MAX};
    CHECK_OK(ss_comm_allreduce_i64(c, iv, 3));
    CHECK(iv[0] == 1 && iv[1] == -2 && iv[2] == INT64_MAX);
    double dv[2] = {0.1, -3e300};
    CHECK_OK(ss_comm_allreduce_f64(c, dv, 2));
    CHECK(dv[0] == 0.1 && dv[1] == -3e300);

    char b[4] = "abc";
    CHECK_OK(ss_comm_bcast(c, b, 4, 0));
    CHECK(!strcmp(b, "abc"));
    CHECK_ERR(ss_comm_bcast(c, b, 4, 1), SS_ERR_ARG, "broadcast from rank 1 of 1");

    char g[4] = {0};
    CHECK_OK(ss_comm_gather(c, "xyz", 4, g));
    CHECK(!strcmp(g, "xyz"));
    void *all = NULL;
    size_t counts[1] = {99};
    CHECK_OK(ss_comm_gatherv(c, "hello", 5, &all, counts));
    CHECK(all && counts[0] == 5 && !memcmp(all, "hello", 5));
    free(all);
    CHECK_OK(ss_comm_gatherv(c, NULL, 0, &all, NULL)); /* nothing to gather is still a buffer */
    CHECK(all != NULL);
    free(all);
    ss_comm_free(c);
}

TEST(dist_single_refuses_peers) {
    ss_comm *c;
    CHECK_OK(ss_comm_open_single(&c));
    int v = 7;
    CHECK_ERR(ss_comm_send(c, 1, 0, &v, sizeof v), SS_ERR_ARG, "rank 1 does not exist (the job has 1 rank)");
    CHECK_ERR(ss_comm_recv(c, 0, 0, &v, sizeof v), SS_ERR_ARG, "rank 0 addressed itself");
    CHECK_ERR(ss_comm_send(c, 1, SS_COMM_MAX_TAG + 1, &v, sizeof v), SS_ERR_ARG, "tag 4096 outside");
    CHECK_ERR(ss_comm_recv(c, 1, -1, &v, sizeof v), SS_ERR_ARG, "tag -1 outside");
    /* One process: abort and check leave the decision to the caller. */
    ss_comm_abort(c, 3, "not fatal here");
    CHECK(ss_comm_check(c, SS_ERR_IO) == SS_ERR_IO);
    CHECK(ss_comm_check(c, SS_OK) == SS_OK);
    ss_comm_free(c);
}

TEST(dist_timeout_setting) {
    const char *old = getenv("SUBSCOPE_DIST_TIMEOUT");
    char *keep = old ? strdup(old) : NULL;
    ss_comm *c;
    setenv("SUBSCOPE_DIST_TIMEOUT", "2.5", 1);
    CHECK_OK(ss_comm_open_single(&c));
    CHECK(ss_comm_timeout(c) == 2.5);
    ss_comm_set_timeout(c, 0); /* ignored: a timeout must be positive */
    CHECK(ss_comm_timeout(c) == 2.5);
    ss_comm_set_timeout(c, 10);
    CHECK(ss_comm_timeout(c) == 10);
    ss_comm_free(c);
    setenv("SUBSCOPE_DIST_TIMEOUT", "soon", 1); /* unreadable: the default */
    CHECK_OK(ss_comm_open_single(&c));
    CHECK(ss_comm_timeout(c) == 300);
    ss_comm_free(c);
    if (keep) setenv("SUBSCOPE_DIST_TIMEOUT", keep, 1);
    else unsetenv("SUBSCOPE_DIST_TIMEOUT");
    free(keep);
}

TEST(dist_world_outside_a_launcher_is_single) {
    /* The unit tests are never started by mpirun: no launcher variables. */
    if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("SLURM_STEP_NUM_TASKS") || getenv("PMIX_RANK")) return;
    ss_comm *w, *w2;
    CHECK_OK(ss_comm_world(&w));
    CHECK_OK(ss_comm_world(&w2));
    CHECK(w == w2);
    CHECK(ss_comm_size(w) == 1 && !strcmp(ss_comm_backend(w), "single"));
}

/* Blocks cover [0, n) in order, without gaps, in whole units, and differ by
 * at most one unit. */
TEST(dist_shard_blocks) {
    for (int64_t n = 0; n <= 40; n++)
        for (int64_t unit = 1; unit <= 9; unit++)
            for (int size = 1; size <= 6; size++) {
                int64_t prev_hi = 0, units = (n + unit - 1) / unit, most = 0, least = INT64_MAX;
                for (int r = 0; r < size; r++) {
                    int64_t lo, hi;
                    ss_comm_shard(n, unit, r, size, &lo, &hi);
                    CHECK_MSG(lo == prev_hi && hi >= lo && hi <= n, "n=%lld unit=%lld size=%d rank %d: [%lld,%lld)",
                              (long long)n, (long long)unit, size, r, (long long)lo, (long long)hi);
                    CHECK_MSG((lo % unit == 0 || lo == n) && (hi % unit == 0 || hi == n), "n=%lld unit=%lld: block not whole units",
                              (long long)n, (long long)unit);
                    int64_t u = (hi - lo + unit - 1) / unit;
                    most = u > most ? u : most;
                    least = u < least ? u : least;
                    /* The first ranks hold the extra units: rank 0 never has fewer batches than any other. */
                    int64_t lo0, hi0;
                    ss_comm_shard(n, unit, 0, size, &lo0, &hi0);
                    CHECK(hi0 - lo0 >= hi - lo || hi == n);
                    prev_hi = hi;
                }
                CHECK_MSG(prev_hi == n, "n=%lld unit=%lld size=%d: blocks end at %lld", (long long)n, (long long)unit, size,
                          (long long)prev_hi);
                CHECK(units == 0 || most - least <= 1);
            }
    int64_t lo, hi;
    ss_comm_shard(10, 4, 0, 3, &lo, &hi); /* units [0,4) [4,8) [8,10): one each */
    CHECK(lo == 0 && hi == 4);
    ss_comm_shard(10, 4, 2, 3, &lo, &hi);
    CHECK(lo == 8 && hi == 10);
    ss_comm_shard(10, 4, 3, 3, &lo, &hi); /* no such rank: empty */
    CHECK(lo == hi);
}
