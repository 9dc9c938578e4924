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

/* Packed rows of different lengths through the queue: the lengths are
 * copied, so the caller's array may change once the write is queued. */
TEST(h5queue_writes_packed_rows_of_different_lengths) {
    char path[512];
    snprintf(path, sizeof path, "%s/queue_rows.h5", ss_test_tmp_dir());
    ss_h5 *h;
    CHECK_OK(ss_h5_create(path, &h));
    int64_t dims[2] = {3, 4};
    ss_h5_dset *d;
    CHECK_OK(ss_h5_dset_create(h, "/x", SS_H5_I32, 2, dims, NULL, &d));
    ss_h5_queue *q;
    CHECK_OK(ss_h5_queue_start(1 << 20, &q));
    int64_t lens[3] = {3, 1, 4}, st[2] = {0, 0}, ct[2] = {3, 4};
    int32_t *buf = malloc(8 * sizeof(int32_t));
    for (int i = 0; i < 8; i++) buf[i] = 10 + i;
    CHECK_OK(ss_h5_queue_write_rows(q, d, 2, st, ct, lens, buf, 8 * sizeof(int32_t)));
    lens[0] = lens[1] = lens[2] = 0;
    CHECK_OK(ss_h5_queue_finish(q));
    CHECK_OK(ss_h5_dset_close(d));
    CHECK_OK(ss_h5_commit(h));
    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(path, &r));
    int32_t *all;
    size_t n;
    CHECK_OK(ss_h5_read_i32(r, "/x", &all, &n, NULL));
    const int32_t want[12] = {10, 11, 12, -1, 13, -1, -1, -1, 14, 15, 16, 17};
    CHECK(n == 12);
    for (size_t i = 0; i < n; i++) CHECK_MSG(all[i] == want[i], "element %zu: %d, want %d", i, all[i], want[i]);
    free(all);
    ss_h5_close_read(r);
}

/* Packed squares (ss_h5_dset_write_squares) through the queue, their sides
 * copied as the rows' lengths are. */
TEST(h5queue_writes_packed_squares_of_different_sides) {
    char path[512];
    snprintf(path, sizeof path, "%s/queue_squares.h5", ss_test_tmp_dir());
    ss_h5 *h;
    CHECK_OK(ss_h5_create(path, &h));
    int64_t dims[3] = {2, 3, 3};
    ss_h5_dset *d;
    CHECK_OK(ss_h5_dset_create(h, "/x", SS_H5_I32, 3, dims, NULL, &d));
    ss_h5_queue *q;
    CHECK_OK(ss_h5_queue_start(1 << 20, &q));
    int64_t sides[2] = {2, 3}, st[3] = {0, 0, 0}, ct[3] = {2, 3, 3};
    int32_t *buf = malloc(13 * sizeof(int32_t));
    for (int i = 0; i < 13; i++) buf[i] = 10 + i;
    CHECK_OK(ss_h5_queue_write_squares(q, d, 3, st, ct, sides, buf, 13 * sizeof(int32_t)));
    sides[0] = sides[1] = 0;
    CHECK_OK(ss_h5_queue_finish(q));
    CHECK_OK(ss_h5_dset_close(d));
    CHECK_OK(ss_h5_commit(h));
    ss_h5_reader *r;
    CHECK_OK(ss_h5_open_read(path, &r));
    int32_t *all;
    size_t n;
    CHECK_OK(ss_h5_read_i32(r, "/x", &all, &n, NULL));
    const int32_t want[18] = {10, 11, -1, 12, 13, -1, -1, -1, -1, 14, 15, 16, 17, 18, 19, 20, 21, 22};
    CHECK(n == 18);
    for (size_t i = 0; i < n; i++) CHECK_MSG(all[i] == want[i], "element %zu: %d, want %d", i, all[i], want[i]);
    free(all);
    ss_h5_close_read(r);
}

/* A write the queue cannot take is refused at once, its buffer freed, with a message for what is
 * wrong: a rank out of range, packed rows or squares with too few axes for the prompts and
 * their rows (before, "bad rank 1" for a packed write of a rank that plain writes take), a
 * negative count of prompts. */
TEST(h5queue_refuses_bad_writes_naming_what_is_wrong) {
    ss_h5_queue *q;
    CHECK_OK(ss_h5_queue_start(1 << 20, &q));
    int64_t lens[2] = {1, 1}, st[3] = {0, 0, 0}, ct[3] = {2, 1, 1};
    CHECK_ERR(ss_h5_queue_write(q, NULL, 0, st, ct, malloc(4), 4), SS_ERR_INTERNAL, "write queue: bad rank 0");
    CHECK_ERR(ss_h5_queue_write_rows(q, NULL, 1, st, ct, lens, malloc(4), 4), SS_ERR_INTERNAL,
              "write queue: packed rows of 1 axes (at least 2: prompts, rows)");
    CHECK_ERR(ss_h5_queue_write_squares(q, NULL, 2, st, ct, lens, malloc(4), 4), SS_ERR_INTERNAL,
              "write queue: packed squares of 2 axes (at least 3: prompts, rows, columns)");
    ct[0] = -1;
    CHECK_ERR(ss_h5_queue_write_rows(q, NULL, 2, st, ct, lens, malloc(4), 4), SS_ERR_INTERNAL,
              "write queue: packed rows of -1 prompts");
    CHECK_OK(ss_h5_queue_finish(q));
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
