#include <stdlib.h>

#include "subscope/h5queue.h"
#include "test.h"

TEST(h5queue_writes_in_background_and_bounds_memory) {
    char path[512];
    snprintf(path, sizeof path, "%s/queue.h5", ss_test_tmp_dir());
    ss_h5 *h;
    CHECK_OK(ss_h5_create(path, &h));
    int64_t dims[2] = {64, 100};
    ss_h5_dset *d;
    CHECK_OK(ss_h5_dset_create(h, "/x", SS_H5_F32, 2, dims, NULL, &d));
    ss_h5_queue *q;
    /* A bound smaller than two rows: every write waits for the previous one. */
    CHECK_OK(ss_h5_queue_start(500, &q));
    for (int64_t r = 0; r < 64; r++) {
        float *row = malloc(100 * sizeof(float));
        for (int i = 0; i < 100; i++) row[i] = (float)(r * 1000 + i);
        int64_t st[2] = {r, 0}, ct[2] = {1, 100};
        CHECK_OK(ss_h5_queue_write(q, d, 2, st, ct, row, 100 * sizeof(float)));
    }
    CHECK_OK(ss_h5_queue_finish(q));
    CHECK_OK(ss_h5_dset_close(d));
    CHECK_OK(ss_h5_commit(h));
    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(path, &r));
    float *all;
    size_t n;
    CHECK_OK(ss_h5_read_f32(r, "/x", &all, &n, NULL));
    CHECK(n == 6400);
    for (size_t i = 0; i < n; i++) CHECK(all[i] == (float)((i / 100) * 1000 + i % 100));
    free(all);
    ss_h5_close_read(r);
}

TEST(h5queue_reports_a_failed_write_with_its_message) {
    char path[512];
    snprintf(path, sizeof path, "%s/queue_err.h5", ss_test_tmp_dir());
    ss_h5 *h;
    CHECK_OK(ss_h5_create(path, &h));
    int64_t dims[1] = {10};
    ss_h5_dset *d;
    CHECK_OK(ss_h5_dset_create(h, "/y", SS_H5_F32, 1, dims, NULL, &d));
    ss_h5_queue *q;
    CHECK_OK(ss_h5_queue_start(1 << 20, &q));
    int64_t st[1] = {8}, ct[1] = {5}; /* runs past the end of the dataset */
    float *buf = calloc(5, sizeof(float));
    ss_status s1 = ss_h5_queue_write(q, d, 1, st, ct, buf, 5 * sizeof(float));
    CHECK(s1 == SS_OK); /* accepted; the failure surfaces later */
    ss_error_clear();
    ss_status s2 = ss_h5_queue_finish(q);
    CHECK(s2 != SS_OK);
    CHECK_MSG(strstr(ss_last_error(), "/y") != NULL, "message: %s", ss_last_error());
    ss_h5_dset_close(d);
    ss_h5_abort(h);
}
