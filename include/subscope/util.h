/* Small helpers shared by every layer: checked sizes, whole-file reads,
 * read-only memory maps, timing. */
#ifndef SUBSCOPE_UTIL_H
#define SUBSCOPE_UTIL_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "subscope/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Overflow-checked size arithmetic: return 1 and set *out on success, 0 on overflow. */
static inline int ss_mul_ok(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline int ss_add_ok(size_t a, size_t b, size_t *out) {
    return !__builtin_add_overflow(a, b, out);
}
/* Product of n non-negative dims; SS_ERR_NOMEM (with what in the message) on overflow. */
ss_status ss_dims_product(const int64_t *dims, int n, size_t *out, const char *what);

/* malloc/calloc/realloc that set an error message (naming what) on failure. */
void *ss_malloc(size_t n, const char *what);
void *ss_calloc(size_t count, size_t size, const char *what);
void *ss_realloc(void *p, size_t n, const char *what);
char *ss_strdup(const char *s);
char *ss_strndup(const char *s, size_t n);
/* Formatted string in a new allocation (NULL on OOM). */
char *ss_strfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Messages on stderr while a progress line may be open. A progress printer that leaves its line
 * without a newline (the CLI's, on a terminal) says so with ss_progress_line(1), and ss_progress_line(0)
 * once it has ended it. ss_eprintf prints a warning or note on stderr as fprintf would, ending an
 * open progress line first (so that the message starts its own line rather than running on after
 * "... elapsed"; the next progress update redraws on the line after it); ss_progress_end only ends
 * it. Every library message on stderr goes through ss_eprintf. */
void ss_progress_line(int open);
void ss_progress_end(void);
void ss_eprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* SS_OK if path is a regular file, or with pipe_ok a pipe (a FIFO, or bash's
 * <(...)); else an error naming it and what it is (a folder, a character
 * device such as /dev/zero, which reads forever, a block device, a socket,
 * or a pipe where the file is read more than once), checked before opening. */
ss_status ss_input_kind(const char *path, int pipe_ok);
/* Opens path for reading: a regular file or a pipe (ss_input_kind); anything
 * else, or a file that cannot be opened, is an error naming it. */
ss_status ss_open_read(const char *path, FILE **f);

/* A temporary file (an output being written, renamed into place when whole)
 * to remove if the process is stopped by SIGINT, SIGTERM, SIGHUP or SIGQUIT: the first
 * registration installs a handler for those whose action is the default,
 * which unlinks every registered path (then removes those that are empty
 * folders) and then dies of the signal as before.
 * path must stay valid until unregistered; at most 64 at once (more are not
 * cleaned up). ss_tmp_unregister returns once no handler reads the paths (one
 * in another thread removing the temporaries is waited for), so the caller
 * may free path then. */
void ss_tmp_register(const char *path);
void ss_tmp_unregister(const char *path);
/* Holds the signals that would stop the process (SIGINT, SIGTERM, SIGHUP, SIGQUIT, and SIGPIPE,
 * which a note on a closed stderr raises) while a job puts more than one file in place, so that
 * a signal never leaves some new files beside old ones: blocked in the calling thread, and one
 * that another thread takes meanwhile (a process-directed signal goes to any thread not
 * blocking it: the CPU pool's workers, a library's) is passed on to it by ss_tmp_register's
 * handler, which this installs as that does; ss_signals_release restores the caller's mask,
 * and a signal that came meanwhile then takes effect, once every file is in place or, after a
 * failure, removed. A signal that another thread took just before, its handler already ending
 * the process, is waited for: the process ends before the first file goes into place. One hold
 * at a time; the renames and removals between are quick (a file's data are synced before).
 * SIGKILL and a power loss cannot be held. */
typedef struct {
    sigset_t old;
} ss_signals_held;
void ss_signals_hold(ss_signals_held *held);
void ss_signals_release(const ss_signals_held *held);
/* Files put in place as one, each output's temporary renamed over its file in turn, with the
 * signals held (ss_signals_hold): a rename that fails part-way (another file system, a file that
 * cannot be replaced, a full directory) leaves every file as it was before the first. A file
 * there before is kept meanwhile under its temporary's name with ".old." for ".tmp."
 * ("<dest>.old.<host>.<pid>", ".NAME.old.<host>.<pid>" for train's hidden ones): a hard link, so
 * the name never lacks a file, or where the file system refuses one (no hard links, another
 * owner's file under protected_hardlinks) the file renamed there. On success ss_replace_done
 * removes the kept copies; after a failure ss_replace_undo puts each back over the new file (or
 * removes a new file that replaced none), last first. The kept copies are not registered with
 * ss_tmp_register: they exist only while the signals are held, and were a handler to remove one
 * it would take the earlier file's only copy; a run killed between (SIGKILL, a power loss) leaves
 * them, and ss_tmp_sweep leaves them too: the earlier files, for the user to put back. */
#define SS_REPLACE_MAX 8
typedef struct {
    int n;
    char *dest[SS_REPLACE_MAX], *kept[SS_REPLACE_MAX]; /* kept: NULL where dest had no file */
} ss_replace;
/* Renames tmp (a name from ss_tmp_name, beside dest) over dest (the file, not a symbolic link to
 * it: ss_out_target), keeping the file at dest first. On failure an error naming `name` (dest as
 * the user gave it) and tmp, with dest as it was, tmp still there and r unchanged (the caller
 * then undoes the earlier files). */
ss_status ss_replace_file(ss_replace *r, const char *tmp, const char *dest, const char *name);
/* After a failure: every file r replaced put back, each new one removed; one that cannot be put
 * back is named on stderr with its kept copy. Empties r. */
void ss_replace_undo(ss_replace *r);
/* Every file in place: the kept copies removed (one that cannot be is named on stderr, a warning:
 * the earlier file, for the user to remove). Empties r. */
void ss_replace_done(ss_replace *r);
/* The temporary name of an output being written: "<final_path>.tmp.<host>.<pid>",
 * host as gethostname() has it with anything but letters, digits and '-' made
 * '_' (so it has no dot), at most 64 characters. */
char *ss_tmp_name(const char *final_path);
/* fsync(fd) for an output about to be renamed into place: 0 when the data are on the disk,
 * and also where the file system has no fsync for the file (EINVAL, ENOTSUP: some network
 * and FUSE file systems, special files), which a writer cannot do better than; -1 with
 * errno set for a real error (EIO, ENOSPC, EDQUOT...). Every writer syncs through it. */
int ss_fsync(int fd);
/* The file an output written under path is renamed over, in a new string: path itself unless
 * it is a symbolic link; for a link, the file at the end of its chain (realpath), or where the
 * last link dangles, the file it names, to be created in its folder, which must be there (else
 * an error naming the link and its target, as for a loop). The temporary goes beside it and is
 * renamed over it, so a link stays a link and its target gets the new data, as a shell's
 * redirection would have it, where a rename over the link itself replaced the link. */
ss_status ss_out_target(const char *path, char **target);
/* 1 if two outputs would be renamed over the same file however spelt (./o.h5 and o.h5, a
 * link and its target), which existing-file checks by inode cannot see before either exists. */
int ss_same_out(const char *a, const char *b);
/* Removes the temporaries of final_path that a run killed before renaming
 * them into place (SIGKILL, a lost node) left behind: those named by
 * ss_tmp_name on this host whose process is gone (kill(pid, 0) says so, and
 * no flock is held on the file, as HDF5 holds one while writing), each with
 * a line on stderr. Others are left: a writer on another host (under MPI or
 * Slurm rank 0 may run anywhere; its pid means nothing here), or one with no
 * host in its name (an older subscope's), each named in a note. Once per path
 * and process. Where final_path is a symbolic link, those of its target
 * (ss_out_target), beside which they are written. */
void ss_tmp_sweep(const char *final_path);
/* Reads a whole regular file into a NUL-terminated buffer; anything else
 * (ss_input_kind, pipes included) is an error naming it. */
ss_status ss_file_read(const char *path, char **data, size_t *len);
/* The same for a text input the user names and that is read once (--input,
 * --masks, --keywords, train's --config): a pipe is read too (a FIFO, bash's
 * <(...)), up to SS_PIPE_READ_MAX bytes (more is an error naming it: a pipe
 * has no size to check first, and one that never ends must not take every
 * byte of memory). */
#define SS_PIPE_READ_MAX ((size_t)1 << 30)
ss_status ss_input_read(const char *path, char **data, size_t *len);
/* 1 if something is at path (a file, or a folder, device or pipe in a file's
 * place, which ss_file_read or ss_mmap_open then refuses naming it, rather
 * than the caller passing over it as absent). */
int ss_file_exists(const char *path);
/* Joins a directory and a file name into a new string. */
char *ss_path_join(const char *dir, const char *name);
/* The folder a path's last name is in, as a new string: "." for a bare name, "/" for one at the
 * root. NULL when out of memory. */
char *ss_path_folder(const char *path);

/* Read-only memory map of a whole file. An empty file maps to data=NULL, size=0. */
typedef struct ss_mmap {
    void *data;
    size_t size;
} ss_mmap;
ss_status ss_mmap_open(const char *path, ss_mmap *m);
void ss_mmap_close(ss_mmap *m);
/* Tells the kernel that bytes [p, p + n) of mapping m are not needed for
 * now: the whole pages among them leave this process's resident memory and
 * are read from the file again if touched (the mapping is read-only). */
void ss_mmap_drop(const ss_mmap *m, const void *p, size_t n);
/* Tells the kernel that bytes [p, p + n) of mapping m will be read soon: it
 * starts reading their pages from the file in the background. */
void ss_mmap_prefetch(const ss_mmap *m, const void *p, size_t n);

/* The address of `symbol` in the plugin `file` ("libsubscope-cuda.so"),
 * loaded on first use from SUBSCOPE_PLUGIN_DIR or the running program's
 * directory; NULL with the error set (naming the file and why) if it cannot
 * be loaded. */
void *ss_plugin_symbol(const char *file, const char *symbol);

/* Monotonic wall-clock seconds. */
double ss_now(void);
/* The most host memory this process has held resident so far, in bytes
 * (getrusage's ru_maxrss); 0 where the system does not say. */
int64_t ss_peak_host_bytes(void);
/* A size for people: "%.1f" in the largest of B, KiB, MiB, GiB, TiB that leaves at least 1
 * (1024 bytes is "1.0 KiB", not "0.0 MiB"). */
void ss_fmt_bytes(char *buf, size_t n, double bytes);

/* Half-precision conversions (IEEE binary16 and bfloat16 to/from fp32). */
float ss_f16_to_f32(uint16_t h);
/* Inline: the CPU's bf16 products widen their weights with it, a panel at a
 * time (cpu_ops.c), and a call per element cost more than the product. */
static inline float ss_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    __builtin_memcpy(&f, &bits, 4);
    return f;
}
uint16_t ss_f32_to_f16(float f);
uint16_t ss_f32_to_bf16(float f);
/* splitmix64's finaliser of z + 0x9E3779B97F4A7C15: the seeded mixing of
 * masks' draws. */
uint64_t ss_mix64(uint64_t z);
/* A standard normal draw that depends only on its five keys (ss_mask_noise
 * defines it; the CPU and GPU mask ops compute the same). */
double ss_keyed_normal(uint64_t seed, int64_t prompt, int64_t position, int site_id, int64_t unit);

/* The process's address-space limit (ulimit -v, RLIMIT_AS) in bytes, or 0
 * where none is set. Under one, OpenBLAS and the CUDA driver, which reserve
 * more address space than they use, need care (cpu_ops.c, cuda_backend.c). */
uint64_t ss_address_space_limit(void);

/* Strict whole numbers, as options and settings are read: an optional '-' and then decimal
 * digits, nothing else (no space, no '+', no trailing text), within int64. 1 if s[0..n) is
 * one (ss_parse_int: all of s), with its value in *out; 0 otherwise (*out untouched). */
int ss_parse_int_n(const char *s, size_t n, int64_t *out);
int ss_parse_int(const char *s, int64_t *out);
/* Strict decimal numbers: digits, '-', '.' and an exponent only (no space, no '+', no hex, inf
 * or nan, no trailing text), finite. 1 if s is one, with its value in *out. */
int ss_parse_real(const char *s, double *out);

/* Settings read from the environment. Unset or empty: the default. Any other value must be
 * what is asked, else SS_ERR_ARG with a message naming the variable, its value and what it
 * takes ("SUBSCOPE_PAD_PRODUCTS='1x': must be a whole number of bytes in 0..2^40 (unset: ...)").
 * ss_env_int: a whole number (ss_parse_int) in lo..hi; what names its unit ("bytes").
 * ss_env_real: a decimal number (no space, no '+', no trailing text, finite) in lo..hi.
 * ss_env_choice: one of names (NULL-terminated), its index in *out; takes describes them all,
 * for the message ("1 (on) or 0 (off)"). */
ss_status ss_env_int(const char *var, int64_t lo, int64_t hi, int64_t def, const char *what, int64_t *out);
ss_status ss_env_real(const char *var, double lo, double hi, double def, const char *what, double *out);
ss_status ss_env_choice(const char *var, const char *const *names, int def, const char *takes, int *out);

/* A 0/1 setting (SUBSCOPE_TIMING, ...): 1 only for "1"; unset, empty, "0" (or a value
 * ss_env_check refuses) 0. */
int ss_env_flag(const char *var);
/* The settings the library reads where a bad value cannot be reported (README's table:
 * SUBSCOPE_THREADS, _DIST_TIMEOUT, _DIST, _BLAS_CORE, _NCCL_CHUNK, _TIMING, _SEND_THREAD,
 * _PREDICT_RECOMPUTE, _PREDICT_TRACE), checked as ss_env_* do; subscope checks them before a
 * command runs. The CUDA backend checks its own when it opens. */
ss_status ss_env_check(void);
/* SUBSCOPE_BLAS_CORE: 0 auto (unset, empty or "auto"), 1 "keep", -1 any other value (which
 * ss_env_check refuses). */
int ss_blas_core_setting(void);

/* Number of worker threads to use (SUBSCOPE_THREADS, else online CPUs). */
int ss_num_threads(void);
/* Runs fn(ctx, i) for i in [0,n) on up to ss_num_threads() threads
 * (src/backend/parallel.c; a nested call runs on the calling thread). */
void ss_parallel_for(int64_t n, void (*fn)(void *ctx, int64_t i), void *ctx);
/* The threads a parallel_for runs on, the caller's included (starts the pool). */
int ss_parallel_width(void);

/* Grows the array *pp (a pointer to the array pointer; elem-byte items, *cap of
 * them) to hold at least need, doubling; 1 on success, 0 on overflow or no memory
 * (the array is then unchanged; no memory: ss_realloc's message, after the CPU backend's kept
 * blocks were given back and it was tried again). */
int ss_grow(void *pp, size_t *cap, size_t need, size_t elem);

/* A growing text buffer, NUL-terminated after every call (p is NULL while
 * empty). After an allocation fails, oom is set and every later call does
 * nothing, so a writer checks once at the end; the owner frees p. */
typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} ss_sbuf;
void ss_sb_put(ss_sbuf *b, const char *s, size_t n);
void ss_sb_str(ss_sbuf *b, const char *s);
void ss_sb_printf(ss_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The columns a terminal gives code point cp: 0 for combining marks and zero-width format
 * characters (Unicode categories Mn, Me, Cf but the soft hyphen; Hangul U+1160..U+11FF), 2 for
 * East Asian Wide and Fullwidth characters (CJK, kana, Hangul syllables, most emoji), 1
 * otherwise (src/util/width_table.h, made by scripts/gen_width_table.py). */
int ss_cp_width(uint32_t cp);
/* The columns of s[0..n) on a terminal: ss_cp_width of each UTF-8 character, 1 for each byte
 * that is not part of valid UTF-8 (ss_display_width_str: all of s). */
int ss_display_width(const char *s, size_t n);
int ss_display_width_str(const char *s);
/* A table cell: s cut to at most width columns (ss_display_width; UTF-8 sequences kept whole,
 * with the combining marks that follow the last one) and padded with spaces to width columns,
 * so that columns of non-ASCII names (CJK, accents) line up as ASCII ones do (printf's
 * %-*.*s counts bytes). */
void ss_fput_col(FILE *f, const char *s, int width);
/* s whole, padded with spaces to width columns (ss_display_width; nothing added where s is
 * as wide or wider): printf's %-*s for text that may not be ASCII. */
void ss_fput_pad(FILE *f, const char *s, int width);
/* Characters of a UTF-8 string (its bytes that are not continuation bytes). */
int ss_utf8_chars(const char *s);
/* Bytes of a UTF-8 byte-order mark at the start of a text (3, or 0 if none): Windows
 * editors write one, and it is not text (a prompt's, a keyword's, a JSON document's). */
size_t ss_utf8_bom(const char *text, size_t len);
/* Bytes of the UTF-8 character at the start of str (avail bytes there): 1..4 when they
 * begin a valid one; 0 when they cannot (a stray continuation byte, an overlong form, a
 * surrogate, a code point past U+10FFFF); -k when all avail (k) bytes are the start of a
 * valid character that was cut short. */
int ss_utf8_len(const char *str, size_t avail);
/* Token text for a terminal: s[0..n) between two quote characters, with the quote, '\\',
 * newline and tab escaped as \" (or \'), \\, \n and \t, and every other control byte and
 * every byte that is not part of valid UTF-8 (a byte-fallback token, or a piece of a character
 * split across tokens) written as \xNN; valid UTF-8 stays as it is. */
void ss_sb_quoted(ss_sbuf *b, const char *s, size_t n, char quote);
/* The same in at most width columns (width > 0; 0: no limit; columns as ss_display_width counts
 * them: a CJK character 2, a combining accent 0): quoted text wider than that keeps its first
 * whole characters and escapes and ends in "…" and the closing quote ('a long tok…'), at most
 * width columns in all (3 when width is less). */
void ss_sb_quoted_cut(ss_sbuf *b, const char *s, size_t n, char quote, int width);
/* Writes s[0..n) to f with each byte that is not part of valid UTF-8 written as \xNN and
 * everything else as it is. Unless final, a character begun at the end but cut short is not
 * written: its byte count is returned, for the caller to prepend to the next bytes (streamed
 * text: a character split across two tokens is written whole once it completes). */
size_t ss_fput_utf8(FILE *f, const char *s, size_t n, int final);

#ifdef __cplusplus
}
#endif
#endif
