/* ss_fsync, the one fsync every writer calls before renaming an output into
 * place: a file system with no fsync for the file (EINVAL, ENOTSUP) is no
 * error, a failing disk (EIO) is. The fsync below replaces the C library's in
 * this binary, so that the writers' own tests (discover's masks, report's page,
 * train's staged files) can run on such a file system too. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "subscope/h5out.h"
#include "subscope/train.h"
#include "subscope/util.h"
#include "test.h"

int ss_test_fsync_errno;

int fsync(int fd) {
    if (ss_test_fsync_errno) {
        errno = ss_test_fsync_errno;
        return -1;
    }
    return (int)syscall(SYS_fsync, fd);
}

int ss_test_unlink_errno;
int ss_test_unlink_delay_ms;

int unlink(const char *path) {
    if (ss_test_unlink_delay_ms) { /* nanosleep: async-signal-safe, as unlink is */
        const struct timespec ts = {ss_test_unlink_delay_ms / 1000, (long)(ss_test_unlink_delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (ss_test_unlink_errno) {
        errno = ss_test_unlink_errno;
        return -1;
    }
    return unlinkat(AT_FDCWD, path, 0);
}

TEST(fsync_unsupported_is_done_and_io_errors_are_not) {
    /* The kernel's own EINVAL: a pipe has no fsync. */
    int p[2];
    CHECK(pipe(p) == 0);
    errno = 0;
    CHECK(fsync(p[1]) == -1 && errno == EINVAL);
    CHECK(ss_fsync(p[1]) == 0);
    close(p[0]), close(p[1]);
    CHECK(ss_fsync(p[1]) == -1 && errno == EBADF);

    /* The HDF5 writer and the safetensors writer, on a file system without fsync
     * and on a failing disk. */
    char *h5 = ss_path_join(ss_test_tmp_dir(), "fsync.h5"), *sf = ss_path_join(ss_test_tmp_dir(), "fsync.safetensors");
    float x[2] = {1, 2};
    int64_t n = 2;
    ss_st_write t[1] = {{"x", 1, &n, x}};
    ss_h5 *h;
    ss_status st = SS_OK;
    for (int k = 0; k < 2 && !st; k++) {
        ss_test_fsync_errno = k ? ENOTSUP : EINVAL;
        if (!(st = ss_h5_create(h5, &h)) && !(st = ss_h5_write_array(h, "/x", SS_H5_F32, 1, &n, NULL, x)))
            st = ss_h5_commit(h);
        if (!st) st = ss_safetensors_write_f32(sf, t, 1);
    }
    ss_test_fsync_errno = 0;
    CHECK_OK(st);
    CHECK(ss_file_exists(h5) && ss_file_exists(sf));
    unlink(h5), unlink(sf);
    ss_test_fsync_errno = EIO;
    ss_error_clear();
    if (!(st = ss_h5_create(h5, &h)) && !(st = ss_h5_write_array(h, "/x", SS_H5_F32, 1, &n, NULL, x))) st = ss_h5_commit(h);
    char *e1 = ss_strdup(ss_last_error());
    ss_error_clear();
    ss_status st2 = ss_safetensors_write_f32(sf, t, 1);
    ss_test_fsync_errno = 0;
    CHECK_MSG(st == SS_ERR_IO && e1 && strstr(e1, "fsync failed: Input/output error"), "HDF5: %s", e1 ? e1 : "");
    CHECK_MSG(st2 == SS_ERR_IO && strstr(ss_last_error(), "Input/output error"), "safetensors: %s", ss_last_error());
    CHECK(!ss_file_exists(h5) && !ss_file_exists(sf));
    free(e1), free(h5), free(sf);
}
