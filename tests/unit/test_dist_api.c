/* The communicator's contract, checked on whatever ss_comm_world gives: one
 * process in the plain unit-test run, and under mpirun (tests/cli/test_nccl.sh)
 * the MPI communicator and, with SUBSCOPE_DIST=nccl, the NCCL communicator's
 * code over its emulation (tests/unit/nccl_emu.c). Every rank runs the same
 * tests in the same order. A failed CHECK returns from its test, so the other
 * ranks may then wait for it and fail at the timeout (test_nccl.sh sets a
 * short one). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/dist.h"
#include "subscope/util.h"
#include "test.h"

#define WORLD(c)   \
    ss_comm *c = NULL; \
    CHECK_OK(ss_comm_world(&c))

static double val(int rank, size_t i) { return 0.1 * (rank + 1) + 1e-3 * (double)i + (rank == 1 ? 1e16 : 0); }

TEST(dist_api_identity) {
    WORLD(c);
    const int rank = ss_comm_rank(c), size = ss_comm_size(c);
    CHECK(size >= 1 && rank >= 0 && rank < size);
    const char *want = getenv("SS_TEST_BACKEND");
    if (want) CHECK_MSG(!strcmp(ss_comm_backend(c), want), "backend %s, expected %s", ss_comm_backend(c), want);
    for (int r = 0; r < size; r++) CHECK(strlen(ss_comm_host(c, r)) > 0 && strcmp(ss_comm_host(c, r), "?"));
    if (!strcmp(ss_comm_backend(c), "nccl")) {
        CHECK(ss_comm_device(c) >= 0);
        for (int r = 0; r < size; r++) CHECK_MSG(!strncmp(ss_comm_device_name(c, r), "cuda:", 5), "rank %d device \"%s\"", r, ss_comm_device_name(c, r));
    } else {
        CHECK(ss_comm_device(c) == -1 && !strcmp(ss_comm_device_name(c, 0), ""));
    }
    CHECK(!strcmp(ss_comm_device_name(c, size), "?"));
}

TEST(dist_api_collectives) {
    WORLD(c);
    const int rank = ss_comm_rank(c), size = ss_comm_size(c);
    for (int root = 0; root < size; root++) {
        int64_t b[3] = {rank, rank * 10, -1};
        CHECK_OK(ss_comm_bcast(c, b, sizeof b, root));
        CHECK_MSG(b[0] == root && b[1] == root * 10 && b[2] == -1, "bcast from %d", root);
    }
    int32_t mine = 1000 + rank, *all = rank == 0 ? calloc((size_t)size, sizeof *all) : NULL;
    CHECK_OK(ss_comm_gather(c, &mine, sizeof mine, all));
    for (int r = 0; rank == 0 && r < size; r++) CHECK(all[r] == 1000 + r);
    free(all);

    /* Uneven blocks, one of them empty, one larger than the NCCL tests' staging chunk. */
    size_t n = rank == 1 ? 0 : (size_t)(rank * 7001 + 13);
    unsigned char *blk = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) blk[i] = (unsigned char)(rank * 31 + i);
    void *got = NULL;
    size_t *counts = rank == 0 ? calloc((size_t)size, sizeof *counts) : NULL;
    CHECK_OK(ss_comm_gatherv(c, blk, n, &got, counts));
    if (rank == 0) {
        size_t off = 0;
        for (int r = 0; r < size; r++) {
            size_t nr = r == 1 ? 0 : (size_t)(r * 7001 + 13);
            CHECK_MSG(counts[r] == nr, "gatherv count of rank %d: %zu", r, counts[r]);
            for (size_t i = 0; i < nr && counts[r] == nr; i++)
                if (((unsigned char *)got)[off + i] != (unsigned char)(r * 31 + i)) {
                    CHECK_MSG(0, "gatherv byte %zu of rank %d", i, r);
                    break;
                }
            off += counts[r];
        }
    } else {
        CHECK(got == NULL);
    }
    free(got);
    free(counts);
    free(blk);

    /* Sums in rank order: the same bits on every rank and every backend. */
    enum { N = 5 };
    int64_t iv[N];
    double dv[N], want[N];
    for (size_t i = 0; i < N; i++) {
        iv[i] = (int64_t)rank * 1000000007LL + (int64_t)i;
        dv[i] = val(rank, i);
        want[i] = val(0, i);
        for (int r = 1; r < size; r++) want[i] += val(r, i);
    }
    CHECK_OK(ss_comm_allreduce_i64(c, iv, N));
    CHECK_OK(ss_comm_allreduce_f64(c, dv, N));
    for (size_t i = 0; i < N; i++) {
        CHECK(iv[i] == (int64_t)size * (size - 1) / 2 * 1000000007LL + (int64_t)size * (int64_t)i);
        CHECK_MSG(dv[i] == want[i], "f64 sum %zu: %.17g, rank order gives %.17g", i, dv[i], want[i]);
    }
    CHECK_OK(ss_comm_barrier(c));
}

/* The device-buffer all-reduce: memory of ss_comm_device (host memory here,
 * also for the emulated NCCL), summed in float64 in rank order. */
TEST(dist_api_allreduce_dev) {
    WORLD(c);
    const int rank = ss_comm_rank(c), size = ss_comm_size(c);
    enum { N = 3001 }; /* more than one staging chunk in the NCCL tests */
    double *d = malloc(N * sizeof *d);
    float *f = malloc(N * sizeof *f);
    for (size_t i = 0; i < N; i++) {
        d[i] = val(rank, i);
        f[i] = (float)(0.25 * rank + 1e-4 * (double)i + (rank == 0 ? 3e7 : 0));
    }
    CHECK_OK(ss_comm_allreduce_dev(c, d, N, SS_COMM_F64));
    CHECK_OK(ss_comm_allreduce_dev(c, f, N, SS_COMM_F32));
    for (size_t i = 0; i < N; i++) {
        double wd = val(0, i), wf = (double)(float)(0 + 1e-4 * (double)i + 3e7);
        for (int r = 1; r < size; r++) {
            wd += val(r, i);
            wf += (double)(float)(0.25 * r + 1e-4 * (double)i);
        }
        if (d[i] != wd || f[i] != (float)wf) {
            CHECK_MSG(0, "element %zu: f64 %.17g (want %.17g), f32 %.9g (want %.9g)", i, d[i], wd, f[i], (float)wf);
            break;
        }
    }
    CHECK_ERR(ss_comm_allreduce_dev(c, d, 1, (ss_comm_dtype)7), SS_ERR_ARG, "unknown element type 7");
    free(d);
    free(f);
    CHECK_OK(ss_comm_barrier(c));
}

/* Messages between two ranks: received by tag, in order within a tag; a
 * small message may be overtaken by a receive of a later tag (a large send
 * may wait for its receive on MPI, as on NCCL: only small ones overtake); a
 * size mismatch is an error that leaves the communicator usable. */
TEST(dist_api_point_to_point) {
    WORLD(c);
    if (ss_comm_size(c) < 2) return; /* one process: dist_single_refuses_peers */
    const int rank = ss_comm_rank(c);
    enum { BIG = 100003 };
    unsigned char *big = malloc(BIG);
    int64_t small = 0, early = 0;
    if (rank == 0) {
        for (size_t i = 0; i < BIG; i++) big[i] = (unsigned char)(i * 7 + 1);
        early = 777;
        small = 424242;
        CHECK_OK(ss_comm_send(c, 1, 7, &early, sizeof early));
        CHECK_OK(ss_comm_send(c, 1, 5, &small, sizeof small));
        CHECK_OK(ss_comm_send(c, 1, 7, NULL, 0));
        CHECK_OK(ss_comm_send(c, 1, 7, big, BIG));
        int64_t two[2];
        CHECK_ERR(ss_comm_recv(c, 1, 9, two, sizeof two), SS_ERR_INTERNAL, "expected 16 bytes from rank 1");
    } else if (rank == 1) {
        memset(big, 0, BIG);
        CHECK_OK(ss_comm_recv(c, 0, 5, &small, sizeof small)); /* overtakes the earlier tag 7 */
        CHECK(small == 424242);
        CHECK_OK(ss_comm_recv(c, 0, 7, &early, sizeof early));
        CHECK(early == 777);
        CHECK_OK(ss_comm_recv(c, 0, 7, NULL, 0));
        CHECK_OK(ss_comm_recv(c, 0, 7, big, BIG));
        int ok = 1;
        for (size_t i = 0; i < BIG && ok; i++) ok = big[i] == (unsigned char)(i * 7 + 1);
        CHECK(ok);
        int64_t one = 9;
        CHECK_OK(ss_comm_send(c, 0, 9, &one, sizeof one));
    }
    free(big);
    CHECK_OK(ss_comm_barrier(c));
}

/* Nonblocking sends keep the order of ss_comm_send: several large isends on
 * one tag, a blocking send on the same tag after them, and an isend on
 * another tag arrive in issue order per tag, whether the communicator moves
 * them in the background (MPI with its sender thread) or not
 * (SUBSCOPE_SEND_THREAD=0, NCCL). The buffers are left untouched until the
 * waits, as the API asks. */
TEST(dist_api_isend_order) {
    WORLD(c);
    if (ss_comm_size(c) < 2) return;
    const int rank = ss_comm_rank(c);
    enum { BIG = 300007, K = 3 };
    unsigned char *big[K];
    for (int k = 0; k < K; k++) big[k] = malloc(BIG);
    int64_t last = 0, other = 0;
    if (rank == 0) {
        ss_comm_req *rq[K + 1] = {0};
        for (int k = 0; k < K; k++) {
            for (size_t i = 0; i < BIG; i++) big[k][i] = (unsigned char)(i * 13 + 29 * k + 1);
            CHECK_OK(ss_comm_isend(c, 1, 7, big[k], BIG, &rq[k]));
        }
        other = 55;
        CHECK_OK(ss_comm_isend(c, 1, 6, &other, sizeof other, &rq[K]));
        last = 4242;
        CHECK_OK(ss_comm_send(c, 1, 7, &last, sizeof last)); /* behind the isends on tag 7 */
        for (int k = 0; k <= K; k++) CHECK_OK(ss_comm_wait(c, rq[k]));
    } else if (rank == 1) {
        CHECK_OK(ss_comm_recv(c, 0, 6, &other, sizeof other));
        CHECK(other == 55);
        for (int k = 0; k < K; k++) {
            memset(big[k], 0, BIG);
            CHECK_OK(ss_comm_recv(c, 0, 7, big[k], BIG));
            int ok = 1;
            for (size_t i = 0; i < BIG && ok; i++) ok = big[k][i] == (unsigned char)(i * 13 + 29 * k + 1);
            CHECK(ok);
        }
        CHECK_OK(ss_comm_recv(c, 0, 7, &last, sizeof last));
        CHECK(last == 4242);
    }
    for (int k = 0; k < K; k++) free(big[k]);
    CHECK_OK(ss_comm_barrier(c));
}

/* Groups: with 3+ ranks, "pairs" {0,1} and "rest" {2..}; with 2, each rank
 * alone and both reversed; with 1, the rank alone. Collectives and
 * point-to-point inside a group map ranks, keep to their members, and do not
 * meet the parent's messages or another space's with the same tag between
 * the same two processes. */
TEST(dist_api_groups) {
    WORLD(c);
    const int rank = ss_comm_rank(c), size = ss_comm_size(c);
    int members[64], n = 0;
    if (size >= 3) {
        if (rank < 2) members[n++] = 0, members[n++] = 1;
        else
            for (int r = 2; r < size && n < 64; r++) members[n++] = r;
    } else if (size == 2) {
        members[n++] = 1, members[n++] = 0; /* group rank 0 is world rank 1 */
    } else {
        members[n++] = 0;
    }
    ss_comm *g = NULL, *g2 = NULL;
    CHECK_OK(ss_comm_group(c, members, n, 1, &g));
    CHECK(ss_comm_size(g) == n);
    CHECK(members[ss_comm_rank(g)] == rank);
    CHECK(!strcmp(ss_comm_host(g, ss_comm_rank(g)), ss_comm_host(c, rank)));
    CHECK(!strcmp(ss_comm_backend(g), ss_comm_backend(c)));
    /* A sum over the group only. */
    double v = rank + 1.0, want = 0;
    for (int i = 0; i < n; i++) want += members[i] + 1.0;
    CHECK_OK(ss_comm_allreduce_f64(g, &v, 1));
    CHECK_MSG(v == want, "rank %d: group sum %g, expected %g", rank, v, want);
    /* The same tag between the same two processes in the parent, in space 1
     * and in space 2: each receive gets its own message, whatever the order. */
    if (n >= 2) {
        CHECK_OK(ss_comm_group(c, members, n, 2, &g2));
        int gr = ss_comm_rank(g), peer = 1 - gr; /* group ranks 0 and 1 */
        if (gr < 2) {
            int64_t a = 100 + rank, b = 200 + rank, p = 300 + rank, got;
            if (gr == 0) {
                CHECK_OK(ss_comm_send(g, peer, 7, &a, sizeof a));
                CHECK_OK(ss_comm_send(g2, peer, 7, &b, sizeof b));
                CHECK_OK(ss_comm_send(c, members[peer], 7, &p, sizeof p));
            } else {
                CHECK_OK(ss_comm_recv(c, members[peer], 7, &got, sizeof got));
                CHECK(got == 300 + members[peer]);
                CHECK_OK(ss_comm_recv(g2, peer, 7, &got, sizeof got));
                CHECK(got == 200 + members[peer]);
                CHECK_OK(ss_comm_recv(g, peer, 7, &got, sizeof got));
                CHECK(got == 100 + members[peer]);
            }
        }
        ss_comm_free(g2);
    }
    CHECK_ERR(ss_comm_send(g, n, 1, &v, sizeof v), SS_ERR_ARG, "does not exist");
    ss_comm_free(g);
    int bad[2] = {rank, rank};
    if (size > 1) CHECK_ERR(ss_comm_group(c, bad, 2, 1, &g), SS_ERR_ARG, "listed twice");
    int other = (rank + 1) % size;
    if (size > 1) CHECK_ERR(ss_comm_group(c, &other, 1, 1, &g), SS_ERR_ARG, "is not one of its members");
    CHECK_ERR(ss_comm_group(c, &rank, 1, SS_COMM_GROUP_SPACES + 1, &g), SS_ERR_ARG, "tag space");
    CHECK_OK(ss_comm_barrier(c));
}

/* Run alone (its filter is "dist_stall"): rank 0 waits for a message that
 * rank 1 never sends, or, with SS_TEST_STALL=send (NCCL emulation only),
 * sends one that never leaves (SS_NCCL_EMU_STALL=send); it must fail within
 * about the timeout, naming rank 1 and its host. One process: nothing to
 * wait for. */
TEST(dist_stall_times_out) {
    WORLD(c);
    if (ss_comm_size(c) < 2 || ss_comm_rank(c) != 0) return;
    ss_comm_set_timeout(c, 1);
    const int sending = getenv("SS_TEST_STALL") && !strcmp(getenv("SS_TEST_STALL"), "send");
    int64_t v = 1;
    if (sending) setenv("SS_NCCL_EMU_STALL", "send", 1); /* from now on: the world is open */
    double t0 = ss_now();
    ss_status st = sending ? ss_comm_send(c, 1, 11, &v, sizeof v) : ss_comm_recv(c, 1, 11, &v, sizeof v);
    double dt = ss_now() - t0;
    CHECK(st == SS_ERR_IO);
    char msg[512];
    snprintf(msg, sizeof msg, "rank 1 (host %s) did not %s within 1 s", ss_comm_host(c, 1),
             sending ? "take the data sent to it" : "send its data");
    CHECK_MSG(strstr(ss_last_error(), msg), "error \"%s\" lacks \"%s\"", ss_last_error(), msg);
    CHECK_MSG(dt >= 0.9 && dt < 5, "gave up after %.2f s", dt);
    if (!strcmp(ss_comm_backend(c), "nccl")) /* aborted: every later call fails at once */
        CHECK_ERR(ss_comm_send(c, 1, 0, &v, sizeof v), SS_ERR_IO, "aborted after an earlier error");
}

/* Run alone under the NCCL emulation (filter "dist_failed_nccl_send"): rank
 * 0's ncclSend fails with a last-error text of 600 characters
 * (SS_NCCL_EMU_FAIL_SEND, SS_NCCL_EMU_LAST_ERROR). The failure and every later
 * call's "aborted after an earlier error (...)" keep NCCL's text to its end
 * (cut at 400 and at 300 bytes before). Elsewhere: nothing to do. */
TEST(dist_failed_nccl_send_kept_whole) {
    WORLD(c);
    if (ss_comm_size(c) < 2 || ss_comm_rank(c) != 0 || strcmp(ss_comm_backend(c), "nccl")) return;
    char last[601];
    memset(last, 'x', 590);
    strcpy(last + 590, " the end.");
    setenv("SS_NCCL_EMU_LAST_ERROR", last, 1);
    setenv("SS_NCCL_EMU_FAIL_SEND", "1", 1);
    int64_t v = 1;
    CHECK_ERR(ss_comm_send(c, 1, 13, &v, sizeof v), SS_ERR_IO, "ncclSend failed: emulated NCCL error: xxx");
    CHECK_MSG(strstr(ss_last_error(), "x the end."), "error \"%s\" lost its end", ss_last_error());
    CHECK_ERR(ss_comm_send(c, 1, 13, &v, sizeof v), SS_ERR_IO, "aborted after an earlier error");
    CHECK_MSG(strstr(ss_last_error(), "x the end.)"), "error \"%s\" lost its end", ss_last_error());
    unsetenv("SS_NCCL_EMU_FAIL_SEND");
    unsetenv("SS_NCCL_EMU_LAST_ERROR");
}

/* Run alone (filter "dist_stall_isend"): rank 0's nonblocking send of a
 * block far above any eager limit, which rank 1 never receives, fails in
 * the wait within about the timeout, naming rank 1, whether the sender
 * thread or the wait itself polls it. */
TEST(dist_stall_isend_times_out) {
    WORLD(c);
    if (ss_comm_size(c) < 2 || ss_comm_rank(c) != 0) return;
    ss_comm_set_timeout(c, 1);
    enum { N = 4 << 20 };
    char *big = calloc(1, N);
    ss_comm_req *rq = NULL;
    const double t0 = ss_now();
    CHECK_OK(ss_comm_isend(c, 1, 12, big, N, &rq));
    ss_status st = ss_comm_wait(c, rq);
    const double dt = ss_now() - t0;
    CHECK(st == SS_ERR_IO);
    char msg[512];
    snprintf(msg, sizeof msg, "rank 1 (host %s) did not take the data sent to it within 1 s", ss_comm_host(c, 1));
    CHECK_MSG(strstr(ss_last_error(), msg), "error \"%s\" lacks \"%s\"", ss_last_error(), msg);
    CHECK_MSG(dt >= 0.9 && dt < 5, "gave up after %.2f s", dt);
    free(big); /* the abandoned send is left to the job's abort, as after any send that timed out */
}

/* Whole jobs over whatever communicator the world is, when the script names
 * outputs (tests/cli/test_nccl.sh runs it on 2 and 3 ranks of the NCCL
 * emulation, then compares the files with one process's): data-parallel
 * collect and forward, and, with SS_TEST_JOB_PIPELINE=P, copies of a
 * P-stage pipeline. Without SS_TEST_JOB_OUT it does nothing. */
#include "subscope/jobs.h"

void ss_backend_cuda_close(ss_backend *be);
ss_status ss_backend_cuda_open(int device, const ss_backend_opts *opts, ss_backend **out);

TEST(dist_jobs_over_the_world) {
    const char *dir = getenv("SS_TEST_JOB_OUT");
    if (!dir) return;
    const char *pp = getenv("SS_TEST_JOB_PIPELINE");
    int pipeline = pp ? atoi(pp) : 0;
    /* SS_TEST_JOB_GPU=1: the emulated GPU, whose captured sites reach forward's hook one batch late. */
    ss_backend *gpu = NULL;
    if (getenv("SS_TEST_JOB_GPU")) CHECK_OK(ss_backend_cuda_open(0, NULL, &gpu));
    char col[512], fwd[512];
    snprintf(col, sizeof col, "%s/collect.h5", dir);
    snprintf(fwd, sizeof fwd, "%s/forward.h5", dir);
    ss_collect_job cj = {.run = {.model_dir = "models/tiny-gpt2", .input = "data/demo_prompts.jsonl", .batch = 2,
                                 .device = "cpu", .backend = gpu, .pipeline = pipeline},
                         .out = col, .sites = "blocks.*.mlp.hook_post,ln_final.hook_normalized", .stats = "mean,cov,pca:3"};
    ss_status cs = ss_job_collect(&cj);
    if (cs && gpu) ss_backend_cuda_close(gpu);
    CHECK_MSG(cs == SS_OK, "collect: %s", ss_last_error());
    ss_forward_job fj = {.run = {.model_dir = "models/tiny-gpt2", .input = "data/demo_prompts.jsonl", .batch = 2,
                                 .device = "cpu", .backend = gpu, .pipeline = pipeline},
                         .out = fwd, .sites = "blocks.1.attn.hook_pattern,blocks.*.hook_resid_post"};
    ss_status fs = ss_job_forward(&fj);
    if (gpu) ss_backend_cuda_close(gpu);
    CHECK_MSG(fs == SS_OK, "forward: %s", ss_last_error());
}

/* A rank that sends the forward's writer a block with fewer axes than its
 * dataset: rank 1 of an MPMD run whose rank 0 is `subscope forward --model
 * models/tiny-gpt2 --input data/demo_prompts.jsonl --batch 3` (docs/DISTRIBUTED.md;
 * tests/cli/test_dist.sh). It opens the same run (the input's check is a
 * collective), then for each of its batches sends /logits as [prompt,
 * position] with the packed rows' bytes, the header laid out as
 * src/jobs/job_forward.c's (dataset, axes, start[4], count[4], bytes on tag
 * 1, the block on tag 2), and the batch's end. Queued, the missing vocab axis
 * counted 0 and wrote nothing, and the file looked complete. Without
 * SS_TEST_CRAFTED_BLOCK it does nothing; a rank_ test runs only when named (test_main.c). */
TEST(rank_forward_crafted_block) {
    if (!getenv("SS_TEST_CRAFTED_BLOCK")) return;
    WORLD(c);
    CHECK(ss_comm_size(c) == 2 && ss_comm_rank(c) == 1);
    ss_run_opts ro = {.model_dir = "models/tiny-gpt2", .input = "data/demo_prompts.jsonl", .batch = 3, .device = "cpu"};
    ss_run run;
    CHECK_OK(ss_run_open(&ro, &run));
    int64_t lo, hi;
    ss_comm_shard(run.p->n, run.B, 1, 2, &lo, &hi);
    for (int64_t b0 = lo; b0 < hi; b0 += run.B) {
        const int64_t nb = hi - b0 < run.B ? hi - b0 : run.B;
        int64_t rows = 0;
        for (int64_t i = 0; i < nb; i++) rows += run.p->items[b0 + i].n_tokens;
        const int64_t bytes = rows * (int64_t)sizeof(float);
        int64_t hdr[11] = {-1, 2, b0, 0, 0, 0, nb, run.T, 0, 0, bytes}, end[11] = {-2};
        float *block = calloc((size_t)rows + 1, sizeof(float));
        CHECK(block != NULL);
        CHECK_OK(ss_comm_send(c, 0, 1, hdr, sizeof hdr));
        CHECK_OK(ss_comm_send(c, 0, 2, block, (size_t)bytes));
        CHECK_OK(ss_comm_send(c, 0, 1, end, sizeof end));
        free(block);
    }
    ss_run_close(&run);
}
