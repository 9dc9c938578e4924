/* The runtime behind kernels/emu/cuda_emu.h: launches, the per-block fiber
 * scheduler, barriers and warp rendezvous. See the header for the model.
 *
 * Fibers are ucontext contexts. makecontext/swapcontext are obsolescent in
 * POSIX but present in every libc we target (glibc, musl with libucontext,
 * macOS with _XOPEN_SOURCE), need no assembly, and AddressSanitizer knows
 * them (we also annotate the switches, as its fiber API asks). A switch
 * costs a sigprocmask system call; tests keep shapes small accordingly.
 *
 * Misuse aborts: this code only runs in tests, where a hang or a silently
 * wrong answer would be worse than a message and a core. */
#define _GNU_SOURCE
#include "cuda_emu.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define SS_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SS_EMU_ASAN 1
#endif
#endif
#ifdef SS_EMU_ASAN
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old, size_t *size_old);
#endif

_Thread_local uint3 ss_emu_threadIdx_, ss_emu_blockIdx_;
_Thread_local dim3 ss_emu_blockDim_, ss_emu_gridDim_;

#define MAX_THREADS 1024
#define MAX_ASYNC 32 /* cp.async copies in flight per thread */
#define DEFAULT_SHARED (48u * 1024u)
#define MAX_OPTIN_SHARED (227u * 1024u) /* sm_90: 228 KB per SM, 227 KB per block */

enum { F_RUN, F_BARRIER, F_WARP, F_DONE };
static const char *state_name[] = {"running", "at __syncthreads", "at a warp operation", "exited"};
static const char *wop_name[] = {"__syncwarp", "__shfl_sync", "__shfl_xor_sync", "__shfl_down_sync",
                                 "__shfl_up_sync", "__ballot_sync", "__any_sync", "__all_sync",
                                 "a warp-wide instruction"};

typedef struct fiber {
    ucontext_t ctx;
    uint3 tid;
    int state;
    const char *file; /* where it waits */
    int line;
    /* warp operation or barrier operands and result */
    int op, param, width, pred;
    unsigned mask;
    uint64_t val, result;
    void (*collective)(void *const *); /* SS_EMU_WOP_COLLECTIVE's work */
    const char *what;                  /* and its name */
    /* cp.async copies not yet written (group -1: not committed yet) */
    int n_async, next_group;
    struct { void *dst; int bytes, group; unsigned char data[16]; } async[MAX_ASYNC];
} fiber;

typedef struct launch {
    int pending; /* configured by SS_LAUNCH, not yet run */
    dim3 grid, block;
    size_t shmem;
    const char *kernel, *file;
    int line;
} launch;

static _Thread_local launch cfg;
static _Thread_local fiber *fibers;
static _Thread_local size_t n_fibers_alloc;
static _Thread_local char *stacks;
static _Thread_local size_t stack_size, stacks_len;
static _Thread_local int nthreads, cur = -1, in_kernel;
static _Thread_local ucontext_t sched_ctx;
static _Thread_local void (*cur_thunk)(void *);
static _Thread_local void *cur_args;
static _Thread_local unsigned char *dyn_shared;
static _Thread_local size_t dyn_shared_len;
static _Thread_local ss_emu_schedule schedule = SS_EMU_FORWARD;
static _Thread_local unsigned shuffle_state = 1;
static _Thread_local ss_emu_copy_timing copy_timing = SS_EMU_COPY_AT_WAIT;
static _Thread_local ss_emu_stats stats;
#ifdef SS_EMU_ASAN
static _Thread_local const void *main_stack_bottom;
static _Thread_local size_t main_stack_size;
#endif

/* Per-kernel opt-in for dynamic shared memory above 48 KB. */
static struct {
    const char *name;
    size_t bytes;
} optin[64];
static int n_optin;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "cuda_emu: kernel %s (launched at %s:%d), block (%u,%u,%u): ", cfg.kernel ? cfg.kernel : "?",
            cfg.file ? cfg.file : "?", cfg.line, ss_emu_blockIdx_.x, ss_emu_blockIdx_.y, ss_emu_blockIdx_.z);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

void ss_emu_set_schedule(ss_emu_schedule s, unsigned seed) {
    schedule = s;
    shuffle_state = seed ? seed : 1;
}

ss_emu_stats ss_emu_get_stats(void) { return stats; }

void ss_emu_set_copy_timing(ss_emu_copy_timing when) { copy_timing = when; }

void ss_emu_set_max_dyn_shared_(const char *kernel, size_t bytes) {
    if (bytes > MAX_OPTIN_SHARED) {
        fprintf(stderr, "cuda_emu: %s: cudaFuncAttributeMaxDynamicSharedMemorySize %zu exceeds the sm_90 limit %u\n",
                kernel, bytes, MAX_OPTIN_SHARED);
        abort();
    }
    for (int i = 0; i < n_optin; i++)
        if (!strcmp(optin[i].name, kernel)) {
            optin[i].bytes = bytes;
            return;
        }
    if (n_optin == (int)(sizeof optin / sizeof optin[0])) {
        fprintf(stderr, "cuda_emu: too many kernels with a shared-memory opt-in\n");
        abort();
    }
    optin[n_optin].name = kernel;
    optin[n_optin++].bytes = bytes;
}

static size_t shared_limit(const char *kernel) {
    for (int i = 0; i < n_optin; i++)
        if (!strcmp(optin[i].name, kernel)) return optin[i].bytes > DEFAULT_SHARED ? optin[i].bytes : DEFAULT_SHARED;
    return DEFAULT_SHARED;
}

void ss_emu_configure_(dim3 grid, dim3 block, size_t shmem, cudaStream_t stream, const char *kernel, const char *file,
                       int line) {
    (void)stream;
    if (in_kernel) {
        fprintf(stderr, "cuda_emu: %s:%d launches %s from inside a kernel (dynamic parallelism is not emulated)\n",
                file, line, kernel);
        abort();
    }
    cfg.pending = 1;
    cfg.grid = grid;
    cfg.block = block;
    cfg.shmem = shmem;
    cfg.kernel = kernel;
    cfg.file = file;
    cfg.line = line;
}

uint32_t ss_emu_smem_offset_(const void *p, const char *what, const char *file, int line) {
    if (!in_kernel) die("%s at %s:%d outside a kernel", what, file, line);
    const unsigned char *q = (const unsigned char *)p;
    if (!dyn_shared_len || q < dyn_shared || q >= dyn_shared + dyn_shared_len)
        die("%s at %s:%d: %p is not in the launch's dynamic shared memory (the emulation encodes only those "
            "addresses)",
            what, file, line, p);
    return (uint32_t)(q - dyn_shared);
}

const void *ss_emu_smem_at_(uint64_t offset, uint64_t bytes, const char *what) {
    if (!in_kernel) die("%s outside a kernel", what);
    if (offset + bytes > dyn_shared_len)
        die("%s reads %llu bytes at shared-memory offset %llu, past the %zu bytes of the launch", what,
            (unsigned long long)bytes, (unsigned long long)offset, dyn_shared_len);
    return dyn_shared + offset;
}

void *ss_emu_dyn_shared_(void) {
    if (!in_kernel) die("dynamic shared memory used outside a kernel");
    if (!dyn_shared_len) die("SS_DYN_SHARED used but the launch asked for 0 bytes of dynamic shared memory");
    return dyn_shared;
}

static void check_config(void) {
    dim3 g = cfg.grid, b = cfg.block;
    uint64_t nt = (uint64_t)b.x * b.y * b.z;
    if (!g.x || !g.y || !g.z || !b.x || !b.y || !b.z)
        die("invalid configuration: grid (%u,%u,%u), block (%u,%u,%u) has a zero (or out-of-range) dimension", g.x,
            g.y, g.z, b.x, b.y, b.z);
    if (g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535)
        die("invalid configuration: grid (%u,%u,%u) exceeds (2^31-1, 65535, 65535)", g.x, g.y, g.z);
    if (nt > MAX_THREADS || b.x > 1024 || b.y > 1024 || b.z > 64)
        die("invalid configuration: block (%u,%u,%u) exceeds 1024 threads or (1024,1024,64)", b.x, b.y, b.z);
    size_t lim = shared_limit(cfg.kernel);
    if (cfg.shmem > lim)
        die("asks for %zu bytes of dynamic shared memory; the limit is %zu%s", cfg.shmem, lim,
            lim == DEFAULT_SHARED ? " (above 48 KB needs SS_SET_MAX_DYN_SHARED, up to 227 KB on sm_90)" : "");
}

static void fiber_main(void) {
#ifdef SS_EMU_ASAN
    __sanitizer_finish_switch_fiber(NULL, &main_stack_bottom, &main_stack_size);
#endif
    cur_thunk(cur_args);
    fibers[cur].state = F_DONE;
#ifdef SS_EMU_ASAN
    /* NULL fake-stack save: this fiber's stack is finished with */
    __sanitizer_start_switch_fiber(NULL, main_stack_bottom, main_stack_size);
#endif
    setcontext(&sched_ctx);
}

/* From a fiber back to the scheduler. */
static void yield(void) {
    stats.switches++;
#ifdef SS_EMU_ASAN
    void *fake = NULL;
    __sanitizer_start_switch_fiber(&fake, main_stack_bottom, main_stack_size);
#endif
    if (swapcontext(&fibers[cur].ctx, &sched_ctx)) die("swapcontext failed");
#ifdef SS_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
}

static void resume(int t) {
    cur = t;
    ss_emu_threadIdx_ = fibers[t].tid;
#ifdef SS_EMU_ASAN
    void *fake = NULL;
    __sanitizer_start_switch_fiber(&fake, stacks + (size_t)t * stack_size, stack_size);
#endif
    if (swapcontext(&sched_ctx, &fibers[t].ctx)) die("swapcontext failed");
#ifdef SS_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
    cur = -1;
}

/* The emulator's own settings (SS_EMU_*), read strictly: a value it does not take stops the
 * process with a message naming the variable, its value and what it takes (exit 2), rather than
 * running with the default. Unset or empty: def. emu_env_choice: the index of names' match. */
static void emu_env_refuse(const char *var, const char *v, const char *takes) {
    fprintf(stderr, "cuda_emu: error: %s='%s': must be %s\n", var, v, takes);
    exit(2);
}

static long emu_env_int(const char *var, long lo, long hi, long def) {
    const char *e = getenv(var);
    if (!e || !*e) return def;
    long v = 0;
    const char *p = e;
    for (; *p >= '0' && *p <= '9' && v <= hi; p++) v = v * 10 + (*p - '0');
    if (*p || v < lo || v > hi) {
        char takes[96];
        snprintf(takes, sizeof takes, "a whole number in %ld..%ld, or unset", lo, hi);
        emu_env_refuse(var, e, takes);
    }
    return v;
}

static int emu_env_choice(const char *var, const char *const *names, int def, const char *takes) {
    const char *e = getenv(var);
    if (!e || !*e) return def;
    for (int i = 0; names[i]; i++)
        if (!strcmp(e, names[i])) return i;
    emu_env_refuse(var, e, takes);
    return def;
}

static void ensure_fibers(int n) {
    if (!stack_size) {
        long kb = emu_env_int("SS_EMU_STACK_KB", 16, 1L << 20, 0); /* KiB per block's thread */
#ifdef SS_EMU_ASAN
        if (kb <= 0) kb = 256; /* redzones make frames larger */
#else
        if (kb <= 0) kb = 64;
#endif
        stack_size = (size_t)kb * 1024;
        long pg = sysconf(_SC_PAGESIZE);
        stack_size = (stack_size + (size_t)pg - 1) / (size_t)pg * (size_t)pg;
    }
    if ((size_t)n <= n_fibers_alloc) return;
    if (stacks) munmap(stacks, stacks_len);
    free(fibers);
    /* one region; the lowest page of each stack is a guard, so an overflow
     * faults instead of silently writing into the neighbouring fiber */
    stacks_len = (size_t)n * stack_size;
    stacks = mmap(NULL, stacks_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    fibers = calloc((size_t)n, sizeof(fiber));
    if (stacks == MAP_FAILED || !fibers) die("cannot allocate %d fiber stacks of %zu bytes", n, stack_size);
    long pg = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < n; i++) mprotect(stacks + (size_t)i * stack_size, (size_t)pg, PROT_NONE);
    n_fibers_alloc = (size_t)n;
}

static void describe_and_die(const char *what) {
    char buf[4096];
    size_t o = 0;
    /* group consecutive threads in the same state at the same place */
    for (int t = 0; t < nthreads && o < sizeof buf - 200;) {
        int u = t;
        while (u + 1 < nthreads && fibers[u + 1].state == fibers[t].state && fibers[u + 1].line == fibers[t].line &&
               fibers[u + 1].op == fibers[t].op)
            u++;
        const fiber *f = &fibers[t];
        if (f->state == F_BARRIER || f->state == F_WARP)
            o += (size_t)snprintf(buf + o, sizeof buf - o, "\n  threads %d..%d %s (%s%s%s:%d)", t, u,
                                  state_name[f->state], f->state == F_WARP ? wop_name[f->op] : "",
                                  f->state == F_WARP ? " at " : "", f->file, f->line);
        else
            o += (size_t)snprintf(buf + o, sizeof buf - o, "\n  threads %d..%d %s", t, u, state_name[f->state]);
        t = u + 1;
    }
    die("%s%s", what, buf);
}

/* A barrier completes when every thread of the block waits at it. A thread
 * that exited while others wait means the barrier is divergent. */
static void check_barrier(void) {
    int at = 0, done = 0, first = -1;
    for (int t = 0; t < nthreads; t++) {
        if (fibers[t].state == F_BARRIER) {
            at++;
            if (first < 0) first = t;
        } else if (fibers[t].state == F_DONE) {
            done++;
        }
    }
    if (!at) return;
    if (at + done == nthreads && done)
        describe_and_die("__syncthreads not reached by every thread of the block (some exited first)");
    if (at < nthreads) return;
    int cnt = 0, all = 1, any = 0;
    for (int t = 0; t < nthreads; t++) {
        cnt += fibers[t].pred;
        all &= fibers[t].pred;
        any |= fibers[t].pred;
    }
    for (int t = 0; t < nthreads; t++) {
        fiber *f = &fibers[t];
        if (f->line != fibers[first].line || f->file != fibers[first].file)
            describe_and_die("threads of the block wait at different __syncthreads calls");
        f->result = f->op == SS_EMU_BAR_COUNT ? (uint64_t)cnt : f->op == SS_EMU_BAR_AND ? (uint64_t)all
                                                                : (uint64_t)any;
        f->state = F_RUN;
    }
}

/* Lanes of warp w, within the block. */
static int warp_lanes(int w) {
    int n = nthreads - w * 32;
    return n > 32 ? 32 : n;
}

/* A warp-wide (32) or warpgroup-wide (128) instruction: when every thread
 * of the group waits at it, run its function once with their operands. */
static void check_collective(int t) {
    fiber *f = &fibers[t];
    const int n = f->width, base = t / n * n;
    void *args[128] = {0};
    for (int l = 0; l < n; l++) {
        const fiber *g = &fibers[base + l];
        if (g->state == F_DONE)
            die("thread %d exited but its %s of %d threads runs %s at %s:%d", base + l, n == 32 ? "warp" : "warpgroup",
                n, f->what, f->file, f->line);
        if (g->state != F_WARP) return; /* not all here yet */
        /* another warp of the warpgroup at a warp-level operation of its own is on its way */
        if ((base + l) / 32 != t / 32 && (g->op != SS_EMU_WOP_COLLECTIVE || g->width != n)) return;
        if (g->op != f->op || g->line != f->line || g->file != f->file || g->collective != f->collective)
            die("%s %d diverged: thread %d at %s (%s:%d), thread %d at %s (%s:%d)", n == 32 ? "warp" : "warpgroup",
                base / n, t, f->what, f->file, f->line, base + l, g->op == f->op ? g->what : wop_name[g->op], g->file,
                g->line);
        args[l] = (void *)(uintptr_t)g->val;
    }
    f->collective(args);
    for (int l = 0; l < n; l++) fibers[base + l].state = F_RUN;
}

static void check_warp(int t) {
    fiber *f = &fibers[t];
    if (f->op == SS_EMU_WOP_COLLECTIVE) {
        check_collective(t);
        return;
    }
    int w = t / 32, lanes = warp_lanes(w), lane = t % 32;
    unsigned mask = f->mask & (lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1));
    if (!(f->mask >> lane & 1))
        die("thread %d calls %s at %s:%d with mask 0x%08x that does not include its own lane %d", t, wop_name[f->op],
            f->file, f->line, f->mask, lane);
    for (int l = 0; l < lanes; l++) {
        if (!(mask >> l & 1)) continue;
        const fiber *g = &fibers[w * 32 + l];
        if (g->state == F_DONE)
            die("lane %d of warp %d exited but is named in the mask 0x%08x of %s at %s:%d", l, w, f->mask,
                wop_name[f->op], f->file, f->line);
        if (g->state != F_WARP || g->mask != f->mask) return; /* not all here yet */
        if (g->op != f->op || g->line != f->line || g->file != f->file)
            die("warp %d diverged: lane %d at %s (%s:%d), lane %d at %s (%s:%d)", w, lane, wop_name[f->op], f->file,
                f->line, l, wop_name[g->op], g->file, g->line);
    }
    unsigned ballot = 0;
    for (int l = 0; l < lanes; l++)
        if (mask >> l & 1 && fibers[w * 32 + l].val) ballot |= 1u << l;
    for (int l = 0; l < lanes; l++) {
        if (!(mask >> l & 1)) continue;
        fiber *g = &fibers[w * 32 + l];
        int width = g->width, src = l;
        if (width <= 0 || width > 32 || (width & (width - 1)))
            die("lane %d: %s at %s:%d with width %d (must be a power of two <= 32)", l, wop_name[g->op], g->file,
                g->line, width);
        int seg = l & ~(width - 1);
        switch (g->op) {
        case SS_EMU_WOP_IDX: src = seg + (g->param & (width - 1)); break;
        case SS_EMU_WOP_XOR: src = l ^ g->param; if (src >= seg + width) src = l; break;
        case SS_EMU_WOP_DOWN: src = l + g->param; if (src >= seg + width) src = l; break;
        case SS_EMU_WOP_UP: src = l - g->param; if (src < seg) src = l; break;
        default: break;
        }
        switch (g->op) {
        case SS_EMU_WOP_IDX: case SS_EMU_WOP_XOR: case SS_EMU_WOP_DOWN: case SS_EMU_WOP_UP:
            /* reading a lane outside the mask is undefined in CUDA: fail loudly */
            if (src < 0 || src >= lanes || !(mask >> src & 1))
                die("lane %d: %s at %s:%d reads lane %d, which is not in the mask 0x%08x", l, wop_name[g->op],
                    g->file, g->line, src, g->mask);
            g->result = fibers[w * 32 + src].val;
            break;
        case SS_EMU_WOP_BALLOT: g->result = ballot; break;
        case SS_EMU_WOP_ANY: g->result = ballot != 0; break;
        case SS_EMU_WOP_ALL: g->result = ballot == mask; break;
        default: g->result = 0; break;
        }
    }
    for (int l = 0; l < lanes; l++)
        if (mask >> l & 1) fibers[w * 32 + l].state = F_RUN;
}

int ss_emu_syncthreads_(int kind, int pred, const char *file, int line) {
    if (!in_kernel || cur < 0) {
        fprintf(stderr, "cuda_emu: __syncthreads at %s:%d outside a kernel\n", file, line);
        abort();
    }
    fiber *f = &fibers[cur];
    f->state = F_BARRIER;
    f->op = kind;
    f->pred = pred;
    f->file = file;
    f->line = line;
    yield();
    return (int)fibers[cur].result;
}

uint64_t ss_emu_warp_op_(int op, unsigned mask, uint64_t val, int param, int width, const char *file, int line) {
    if (!in_kernel || cur < 0) {
        fprintf(stderr, "cuda_emu: %s at %s:%d outside a kernel\n", wop_name[op], file, line);
        abort();
    }
    fiber *f = &fibers[cur];
    f->state = F_WARP;
    f->op = op;
    f->mask = mask;
    f->val = val;
    f->param = param;
    f->width = width;
    f->file = file;
    f->line = line;
    yield();
    return fibers[cur].result;
}

void ss_emu_warp_collective_(void (*fn)(void *const *lane_args), void *args, int threads, const char *what,
                             const char *file, int line) {
    if (!in_kernel || cur < 0) {
        fprintf(stderr, "cuda_emu: %s at %s:%d outside a kernel\n", what, file, line);
        abort();
    }
    if (threads != 32 && threads != 128) die("%s at %s:%d: a group of %d threads (32 or 128)", what, file, line, threads);
    if (cur / threads * threads + threads > nthreads)
        die("%s at %s:%d in a block of %d threads: it needs all %d threads of its %s", what, file, line, nthreads,
            threads, threads == 32 ? "warp" : "warpgroup");
    fiber *f = &fibers[cur];
    f->state = F_WARP;
    f->op = SS_EMU_WOP_COLLECTIVE;
    f->mask = 0xffffffffu;
    f->val = (uint64_t)(uintptr_t)args;
    f->param = 0;
    f->width = threads;
    f->collective = fn;
    f->what = what;
    f->file = file;
    f->line = line;
    yield();
}

static fiber *kernel_fiber(const char *what, const char *file, int line) {
    if (!in_kernel || cur < 0) {
        fprintf(stderr, "cuda_emu: %s at %s:%d outside a kernel\n", what, file, line);
        abort();
    }
    return &fibers[cur];
}

void ss_emu_cp_async_(void *dst, const void *src, int cp_bytes, int src_bytes, const char *file, int line) {
    fiber *f = kernel_fiber("cp.async", file, line);
    if ((cp_bytes != 4 && cp_bytes != 8 && cp_bytes != 16) || src_bytes < 0 || src_bytes > cp_bytes ||
        ((uintptr_t)dst | (uintptr_t)src) % (unsigned)cp_bytes)
        die("cp.async at %s:%d: %d bytes (%d from the source), dst %p, src %p: sizes are 4, 8 or 16 bytes and both "
            "addresses aligned to them",
            file, line, cp_bytes, src_bytes, dst, src);
    if (copy_timing == SS_EMU_COPY_AT_ISSUE) {
        memset(dst, 0, (size_t)cp_bytes);
        if (src_bytes) memcpy(dst, src, (size_t)src_bytes);
        return;
    }
    if (f->n_async == MAX_ASYNC)
        die("cp.async at %s:%d: more than %d copies of one thread in flight (wait for some first)", file, line,
            MAX_ASYNC);
    int i = f->n_async++;
    f->async[i].dst = dst;
    f->async[i].bytes = cp_bytes;
    f->async[i].group = -1;
    memset(f->async[i].data, 0, sizeof f->async[i].data);
    if (src_bytes) memcpy(f->async[i].data, src, (size_t)src_bytes);
}

void ss_emu_check_align_(const void *p, unsigned align, const char *what, const char *file, int line) {
    if ((uintptr_t)p % align) die("%s at %s:%d: address %p is not a multiple of %u bytes", what, file, line, p, align);
}

void ss_emu_cp_async_commit_(const char *file, int line) {
    fiber *f = kernel_fiber("cp.async.commit_group", file, line);
    for (int i = 0; i < f->n_async; i++)
        if (f->async[i].group < 0) f->async[i].group = f->next_group;
    f->next_group++;
}

void ss_emu_cp_async_wait_(int newest_pending, const char *file, int line) {
    fiber *f = kernel_fiber("cp.async.wait_group", file, line);
    int keep = 0;
    for (int i = 0; i < f->n_async; i++) {
        int g = f->async[i].group;
        if (g >= 0 && g < f->next_group - newest_pending)
            memcpy(f->async[i].dst, f->async[i].data, (size_t)f->async[i].bytes);
        else f->async[keep++] = f->async[i];
    }
    f->n_async = keep;
}

/* Separate from the loop in run_block: getcontext returns twice, which
 * makes a loop variable live across it a -Wclobbered hazard. */
static __attribute__((noinline)) void init_fiber(const int t) {
    fiber *const f = &fibers[t];
    memset(f, 0, sizeof *f);
    f->tid.x = (unsigned)t % cfg.block.x;
    f->tid.y = (unsigned)t / cfg.block.x % cfg.block.y;
    f->tid.z = (unsigned)t / (cfg.block.x * cfg.block.y);
    f->state = F_RUN;
    if (getcontext(&f->ctx)) die("getcontext failed");
    f->ctx.uc_stack.ss_sp = stacks + (size_t)t * stack_size;
    f->ctx.uc_stack.ss_size = stack_size;
    f->ctx.uc_link = NULL;
    makecontext(&f->ctx, fiber_main, 0);
}

static void run_block(void) {
    for (int t = 0; t < nthreads; t++) init_fiber(t);
    if (dyn_shared_len) memset(dyn_shared, 0xff, dyn_shared_len);
    int live = nthreads;
    while (live) {
        /* Greedy: always resume the first runnable thread in schedule order,
         * so the first warp runs ahead of the others up to the next
         * __syncthreads (and the last one does in reverse order): a missing
         * barrier lets one warp overwrite shared memory that another has
         * not read yet, and the two orders then disagree. */
        int t = -1;
        if (schedule == SS_EMU_SHUFFLE) {
            shuffle_state = shuffle_state * 1103515245u + 12345u;
            int k = (int)((shuffle_state >> 8) % (unsigned)nthreads);
            for (int i = 0; i < nthreads && t < 0; i++)
                if (fibers[(k + i) % nthreads].state == F_RUN) t = (k + i) % nthreads;
        } else {
            for (int i = 0; i < nthreads && t < 0; i++) {
                int u = schedule == SS_EMU_REVERSE ? nthreads - 1 - i : i;
                if (fibers[u].state == F_RUN) t = u;
            }
        }
        if (t < 0) describe_and_die("deadlock: no thread can proceed");
        resume(t);
        switch (fibers[t].state) {
        case F_DONE: live--; check_barrier(); break;
        case F_BARRIER: check_barrier(); break;
        case F_WARP: check_warp(t); break;
        default: break;
        }
    }
}

/* Launches per kernel name (names are SS_KERNEL's string literals). */
static _Thread_local struct { const char *name; long n; } launch_counts[512];
static _Thread_local int n_launch_counts;

static void count_launch(const char *kernel) {
    for (int i = 0; i < n_launch_counts; i++)
        if (!strcmp(launch_counts[i].name, kernel)) {
            launch_counts[i].n++;
            return;
        }
    if (n_launch_counts < (int)(sizeof launch_counts / sizeof launch_counts[0]))
        launch_counts[n_launch_counts].name = kernel, launch_counts[n_launch_counts++].n = 1;
}

/* SS_EMU_CENSUS=1: every launch of the process tallied by kernel (launches, blocks,
 * threads per block) and printed to stderr at exit with the runtime's and cuBLAS's
 * calls (host_runtime.c), to see what a job asks of a GPU without one: a launch per
 * row or per mask, a one-block grid, a product run as many small ones.
 * SS_EMU_CENSUS=trace: also each allocation and heuristic as it happens. */
void ss_emu_census_api(FILE *f); /* host_runtime.c */
int ss_emu_census_enabled(void);
static pthread_mutex_t census_mu = PTHREAD_MUTEX_INITIALIZER;
typedef struct census_row { const char *name; long launches, blocks, min_blocks; unsigned threads; } census_row;
static census_row census[512];
static int n_census, census_on = -1, census_tracing;
static long census_total;
static const char *census_last;

int ss_emu_census_trace(void) { return ss_emu_census_enabled() && census_tracing; }

/* Launches so far (census on), and the last one's kernel. */
const char *ss_emu_census_launches(long *n) {
    pthread_mutex_lock(&census_mu);
    *n = census_total;
    const char *last = census_last;
    pthread_mutex_unlock(&census_mu);
    return last;
}

static void census_print(void) {
    fprintf(stderr, "cuda_emu census: %-44s %10s %14s %10s %8s\n", "kernel", "launches", "blocks", "min grid",
            "block");
    for (int i = 0; i < n_census; i++)
        fprintf(stderr, "cuda_emu census: %-44s %10ld %14ld %10ld %8u\n", census[i].name, census[i].launches,
                census[i].blocks, census[i].min_blocks, census[i].threads);
    ss_emu_census_api(stderr);
}

int ss_emu_census_enabled(void) {
    static const char *const census_values[] = {"0", "1", "trace", NULL};
    static _Atomic int census_env = -1;
    /* read before the lock: a bad value exits, and exit's handlers must not find it held */
    int v = atomic_load(&census_env);
    if (v < 0) {
        v = emu_env_choice("SS_EMU_CENSUS", census_values, 0, "1 (the census), trace (and each allocation) or 0");
        atomic_store(&census_env, v);
    }
    pthread_mutex_lock(&census_mu);
    if (census_on < 0) {
        census_on = v > 0;
        census_tracing = v == 2;
        if (census_on) atexit(census_print);
    }
    pthread_mutex_unlock(&census_mu);
    return census_on;
}

static void census_launch(const char *kernel, long blocks, unsigned threads) {
    if (!ss_emu_census_enabled()) return;
    pthread_mutex_lock(&census_mu);
    census_total++, census_last = kernel;
    int i = 0;
    while (i < n_census && strcmp(census[i].name, kernel)) i++;
    if (i == n_census && n_census < (int)(sizeof census / sizeof census[0]))
        census[n_census++] = (census_row){.name = kernel, .min_blocks = blocks};
    if (i < n_census) {
        census[i].launches++, census[i].blocks += blocks, census[i].threads = threads;
        if (blocks < census[i].min_blocks) census[i].min_blocks = blocks;
    }
    pthread_mutex_unlock(&census_mu);
}

/* SS_EMU_HOST_ONLY=1: launches are checked and counted but no block runs,
 * and the emulated cuBLAS checks its arguments and computes nothing
 * (host_runtime.c), so a run's time is what its host side costs: its own
 * work, the copies and the calls. The values it reads back are meaningless
 * (device memory is zeros from cudaMalloc on). */
int ss_emu_host_only(void) {
    static int on = -1;
    if (on < 0) {
        static const char *const off_on[] = {"0", "1", NULL};
        on = emu_env_choice("SS_EMU_HOST_ONLY", off_on, 0, "1 (no block runs) or 0");
    }
    return on;
}

long ss_emu_launch_count(const char *kernel) {
    for (int i = 0; i < n_launch_counts; i++)
        if (!strcmp(launch_counts[i].name, kernel)) return launch_counts[i].n;
    return 0;
}

void ss_emu_launch_(const char *kernel, void (*thunk)(void *), void *args) {
    if (!cfg.pending || strcmp(cfg.kernel, kernel)) {
        fprintf(stderr, "cuda_emu: kernel %s called directly; launch it with SS_LAUNCH\n", kernel);
        abort();
    }
    cfg.pending = 0;
    ss_emu_blockIdx_ = (uint3){0, 0, 0};
    check_config();
    nthreads = (int)(cfg.block.x * cfg.block.y * cfg.block.z);
    ensure_fibers(nthreads);
    if (cfg.shmem > dyn_shared_len || !dyn_shared) {
        free(dyn_shared);
        dyn_shared = aligned_alloc(256, (cfg.shmem + 255) / 256 * 256 + 256);
        if (!dyn_shared) die("cannot allocate %zu bytes of dynamic shared memory", cfg.shmem);
    }
    dyn_shared_len = cfg.shmem;
    ss_emu_blockDim_ = cfg.block;
    ss_emu_gridDim_ = cfg.grid;
    cur_thunk = thunk;
    cur_args = args;
    in_kernel = 1;
    stats.launches++;
    count_launch(kernel);
    census_launch(kernel, (long)cfg.grid.x * cfg.grid.y * cfg.grid.z, (unsigned)nthreads);
    for (unsigned z = 0; z < (ss_emu_host_only() ? 0 : cfg.grid.z); z++)
        for (unsigned y = 0; y < cfg.grid.y; y++)
            for (unsigned x = 0; x < cfg.grid.x; x++) {
                ss_emu_blockIdx_ = (uint3){x, y, z};
                run_block();
                stats.blocks++;
                stats.threads += (uint64_t)nthreads;
            }
    in_kernel = 0;
}
