/* HDF5 writer and reader: the only file in subscope that calls HDF5.
 *
 * Error handling: HDF5's automatic stack printing is switched off; every
 * failing call is turned into one ss_errorf line "<file>: <object>: <what>:
 * <innermost HDF5 description> [<minor message>]" by h5_fail(), which also
 * clears the HDF5 stack so that a later failure does not report a stale one. */
#include "subscope/h5out.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>
#include <hdf5_hl.h>

#include "subscope/util.h"

/* ------------------------------------------------------------ error glue */

typedef struct {
    int got;
    char desc[640];
    char minor[160];
} h5_first_err;

static herr_t walk_first(unsigned n, const H5E_error2_t *e, void *p) {
    h5_first_err *f = p;
    /* H5E_WALK_UPWARD starts at the innermost frame, where the cause is. */
    if (n == 0 && e) {
        f->got = 1;
        const char *d = e->desc ? e->desc : "";
        /* The POSIX driver's "file write failed: time = ..., filename = '...', ..., errno = 28,
         * error message = 'File too large', ..." (over lines) and "unable to open file: name =
         * '...', errno = 36, error message = 'File name too long', ...": keep its head and the
         * message, which a long file name (named before it by the caller) would push past the end. */
        const char *t = strstr(d, ": time = "), *m = NULL;
        if (!t) t = strstr(d, ": name = '");
        if (t) m = strstr(t, ", errno = ");
        if (m) m = strstr(m, "error message = '");
        if (m) {
            m += strlen("error message = '");
            snprintf(f->desc, sizeof f->desc, "%.*s: %.*s", (int)(t - d), d, (int)strcspn(m, "'"), m);
        } else {
            snprintf(f->desc, sizeof f->desc, "%s", d);
        }
        if (H5Eget_msg(e->min_num, NULL, f->minor, sizeof f->minor) < 0) f->minor[0] = 0;
    }
    return 0;
}

static ss_status h5_fail(ss_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static ss_status h5_fail(ss_status code, const char *fmt, ...) {
    char small[1024], *ctx = small; /* a longer one (a long path in it) whole, on the heap */
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof small && (ctx = malloc((size_t)n + 1)) != NULL) {
        va_start(ap, fmt);
        vsnprintf(ctx, (size_t)n + 1, fmt, ap);
        va_end(ap);
    } else ctx = small;
    h5_first_err f = {0};
    /* Takes a copy and clears the live stack. */
    hid_t st = H5Eget_current_stack();
    if (st >= 0) {
        H5Ewalk2(st, H5E_WALK_UPWARD, walk_first, &f);
        H5Eclose_stack(st);
    }
    if (!f.got) ss_errorf(code, "%s", ctx);
    else if (f.minor[0] && strcmp(f.minor, f.desc) != 0) ss_errorf(code, "%s: %s [%s]", ctx, f.desc, f.minor);
    else ss_errorf(code, "%s: %s", ctx, f.desc);
    if (ctx != small) free(ctx);
    return code;
}

static void h5_quiet(void) {
    /* No close of the library at exit: where a failed write (a full disk)
     * left a file that HDF5 could not close, its exit handler would try
     * again on freed state and crash after the error was reported. Every
     * file is closed, or its temporary removed, before exit; this is the
     * first HDF5 call of each way in, so it comes before the library's start. */
    static int once;
    if (!once) H5dont_atexit(), once = 1;
    /* Library code never prints; errors come back through h5_fail. */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

/* ------------------------------------------------------------------ types */

size_t ss_h5_type_size(ss_h5_type t) {
    switch (t) {
    case SS_H5_F32: return 4;
    case SS_H5_F64: return 8;
    case SS_H5_I32: return 4;
    case SS_H5_I64: return 8;
    case SS_H5_U8: return 1;
    default: return 0;
    }
}

const char *ss_h5_type_name(ss_h5_type t) {
    switch (t) {
    case SS_H5_F32: return "f32";
    case SS_H5_F64: return "f64";
    case SS_H5_I32: return "i32";
    case SS_H5_I64: return "i64";
    case SS_H5_U8: return "u8";
    default: return "invalid";
    }
}

static hid_t file_type(ss_h5_type t) {
    switch (t) {
    case SS_H5_F32: return H5T_IEEE_F32LE;
    case SS_H5_F64: return H5T_IEEE_F64LE;
    case SS_H5_I32: return H5T_STD_I32LE;
    case SS_H5_I64: return H5T_STD_I64LE;
    case SS_H5_U8: return H5T_STD_U8LE;
    default: return -1;
    }
}

static hid_t mem_type(ss_h5_type t) {
    switch (t) {
    case SS_H5_F32: return H5T_NATIVE_FLOAT;
    case SS_H5_F64: return H5T_NATIVE_DOUBLE;
    case SS_H5_I32: return H5T_NATIVE_INT32;
    case SS_H5_I64: return H5T_NATIVE_INT64;
    case SS_H5_U8: return H5T_NATIVE_UINT8;
    default: return -1;
    }
}

static int is_float(ss_h5_type t) { return t == SS_H5_F32 || t == SS_H5_F64; }

/* ------------------------------------------------------------------ paths */

/* Absolute, no empty or "." components, no trailing slash ("/" alone only
 * where allow_root). */
static int path_ok(const char *p, int allow_root) {
    if (!p || p[0] != '/') return 0;
    if (p[1] == 0) return allow_root;
    const char *c = p + 1;
    while (*c) {
        const char *e = strchr(c, '/');
        size_t len = e ? (size_t)(e - c) : strlen(c);
        if (len == 0) return 0;
        if (len == 1 && c[0] == '.') return 0;
        if (!e) break;
        if (e[1] == 0) return 0;
        c = e + 1;
    }
    return 1;
}

/* Does the object at an absolute path exist?  H5Lexists needs every parent
 * to exist, so test each prefix in turn.  <0 on HDF5 error. */
static int obj_exists(hid_t file, const char *path) {
    if (!strcmp(path, "/")) return 1;
    size_t len = strlen(path);
    char *buf = malloc(len + 1);
    if (!buf) return -1;
    memcpy(buf, path, len + 1);
    int res = 1;
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char save = buf[i];
        buf[i] = 0;
        htri_t e = H5Lexists(file, buf, H5P_DEFAULT);
        buf[i] = save;
        if (e <= 0) { res = e < 0 ? -1 : 0; break; }
    }
    free(buf);
    return res;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* ----------------------------------------------------------------- writer */

typedef struct h5_scale {
    char *name;       /* dimension name == root dataset name */
    int64_t size;
    char *first_user; /* dataset that introduced it, for clash messages */
    hid_t id;
} h5_scale;

struct ss_h5 {
    char *final_path;  /* as given, for messages */
    char *target_path; /* what the rename replaces: final_path, or the file it links to (ss_out_target) */
    char *tmp_path;
    hid_t file;
    int deflate;
    h5_scale *scales;
    size_t n_scales, cap_scales;
    ss_h5_dset *open_head; /* datasets not yet closed, to close at commit */
};

struct ss_h5_dset {
    ss_h5 *h; /* NULL once detached by commit/abort */
    hid_t id;
    ss_h5_type type;
    int ndim;
    int64_t dims[SS_H5_MAX_DIMS];
    char *path;
    ss_h5_dset *prev, *next;
};

const char *ss_h5_final_path(const ss_h5 *h) { return h ? h->final_path : NULL; }
const char *ss_h5_tmp_path(const ss_h5 *h) { return h ? h->tmp_path : NULL; }
const char *ss_h5_dset_path(const ss_h5_dset *d) { return d ? d->path : NULL; }
int ss_h5_dset_ndim(const ss_h5_dset *d) { return d ? d->ndim : -1; }

static hid_t make_fapl(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return -1;
#if H5_VERSION_GE(1, 10, 7)
    /* Lustre/NFS often lack flock; locking is a safety net, not a need. */
    H5Pset_file_locking(fapl, 1, 1);
#endif
    return fapl;
}

ss_status ss_h5_create(const char *final_path, ss_h5 **out) {
    *out = NULL;
    h5_quiet();
    if (!final_path || !*final_path) return ss_errorf(SS_ERR_ARG, "HDF5 output: empty file name");
    ss_h5 *h = ss_calloc(1, sizeof *h, "HDF5 writer");
    if (!h) return SS_ERR_NOMEM;
    h->file = -1;
    h->deflate = 4;
    h->final_path = ss_strdup(final_path);
    ss_status lst = ss_out_target(final_path, &h->target_path);
    h->tmp_path = h->target_path ? ss_tmp_name(h->target_path) : NULL;
    if (lst || !h->final_path || !h->tmp_path) {
        free(h->final_path);
        free(h->target_path);
        free(h->tmp_path);
        free(h);
        return lst ? lst : ss_errorf(SS_ERR_NOMEM, "%s: out of memory", final_path);
    }
    struct stat sb;
    if (stat(final_path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        ss_status st = ss_errorf(SS_ERR_ARG, "%s: is a directory, not an output file name", final_path);
        free(h->final_path);
        free(h->target_path);
        free(h->tmp_path);
        free(h);
        return st;
    }
    ss_tmp_sweep(h->target_path); /* a killed run's temporaries of this output */
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    hid_t fapl = make_fapl();
    /* The 1.10 file format: a checksum on every piece of metadata (superblock,
     * object headers, B-trees, heaps, and the chunk indexes, which in the
     * 1.8 format were version 1 B-trees without one), so a reader finds
     * damaged metadata by its checksum instead of trusting it. HDF5 1.10
     * and later read it (docs/DECISIONS.md). */
    if (fapl >= 0 && H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110) < 0) {
        H5Pclose(fapl);
        fapl = -1;
    }
    /* netCDF-4 readers expect tracked link creation order in groups. */
    if (fcpl >= 0) H5Pset_link_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    ss_tmp_register(h->tmp_path); /* removed if a signal stops the process */
    h->file = fcpl < 0 || fapl < 0 ? -1 : H5Fcreate(h->tmp_path, H5F_ACC_TRUNC, fcpl, fapl);
    /* Capture the stack now: the next API call (H5Pclose) clears it. */
    ss_status st = h->file < 0 ? h5_fail(SS_ERR_IO, "%s: cannot create temporary output file %s", final_path,
                                         h->tmp_path)
                               : SS_OK;
    if (fcpl >= 0) H5Pclose(fcpl);
    if (fapl >= 0) H5Pclose(fapl);
    if (st != SS_OK) {
        ss_tmp_unregister(h->tmp_path);
        free(h->final_path);
        free(h->target_path);
        free(h->tmp_path);
        free(h);
        return st;
    }
    *out = h;
    return SS_OK;
}

ss_status ss_h5_set_deflate(ss_h5 *h, int level) {
    if (level < 0 || level > 9)
        return ss_errorf(SS_ERR_ARG, "%s: deflate level %d is not in 0..9", h->final_path, level);
    h->deflate = level;
    return SS_OK;
}

/* Closes every HDF5 object of h (datasets are detached, not freed).
 * Returns the first failure. */
static ss_status close_all(ss_h5 *h) {
    ss_status st = SS_OK;
    for (ss_h5_dset *d = h->open_head; d; d = d->next) {
        if (d->id >= 0 && H5Dclose(d->id) < 0 && st == SS_OK)
            st = h5_fail(SS_ERR_IO, "%s: %s: closing dataset", h->final_path, d->path);
        d->id = -1;
        d->h = NULL;
    }
    h->open_head = NULL;
    for (size_t i = 0; i < h->n_scales; i++) {
        if (h->scales[i].id >= 0 && H5Dclose(h->scales[i].id) < 0 && st == SS_OK)
            st = h5_fail(SS_ERR_IO, "%s: /%s: closing dimension scale", h->final_path, h->scales[i].name);
        h->scales[i].id = -1;
    }
    if (h->file >= 0) {
        if (st == SS_OK && H5Fflush(h->file, H5F_SCOPE_GLOBAL) < 0)
            st = h5_fail(SS_ERR_IO, "%s: flushing %s", h->final_path, h->tmp_path);
        if (H5Fclose(h->file) < 0 && st == SS_OK)
            st = h5_fail(SS_ERR_IO, "%s: closing %s", h->final_path, h->tmp_path);
        h->file = -1;
    }
    return st;
}

static void free_writer(ss_h5 *h) {
    ss_tmp_unregister(h->tmp_path);
    for (size_t i = 0; i < h->n_scales; i++) {
        free(h->scales[i].name);
        free(h->scales[i].first_user);
    }
    free(h->scales);
    free(h->final_path);
    free(h->target_path);
    free(h->tmp_path);
    free(h);
}

static ss_status sync_path(const char *path, int dir) {
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return ss_errorf(SS_ERR_IO, "%s: cannot open to sync: %s", path, strerror(errno));
    int rc = ss_fsync(fd);
    int e = errno;
    close(fd);
    /* Only a real I/O error on the data file matters (a folder's sync is best effort). */
    if (rc != 0 && !dir)
        return ss_errorf(SS_ERR_IO, "%s: fsync failed: %s", path, strerror(e));
    return SS_OK;
}

static ss_status commit(ss_h5 *h, ss_signals_held *held, ss_replace *r) {
    if (!h) {
        if (held) ss_signals_hold(held);
        return ss_errorf(SS_ERR_ARG, "ss_h5_commit: NULL writer");
    }
    ss_status st = close_all(h);
    if (st == SS_OK) st = sync_path(h->tmp_path, 0);
    if (held) ss_signals_hold(held); /* after the sync, which can take a while */
    if (st == SS_OK && r) st = ss_replace_file(r, h->tmp_path, h->target_path, h->final_path);
    else if (st == SS_OK && rename(h->tmp_path, h->target_path) != 0)
        st = ss_errorf(SS_ERR_IO, "%s: cannot rename %s into place: %s", h->final_path, h->tmp_path,
                       strerror(errno));
    if (st != SS_OK) {
        unlink(h->tmp_path);
        free_writer(h);
        return st;
    }
    /* Make the rename itself durable; best effort. */
    char *dir = ss_path_folder(h->target_path);
    if (dir) sync_path(dir, 1);
    free(dir);
    ss_error_clear();
    free_writer(h);
    return SS_OK;
}

ss_status ss_h5_commit(ss_h5 *h) { return commit(h, NULL, NULL); }

ss_status ss_h5_commit_held(ss_h5 *h, ss_signals_held *held, ss_replace *r) { return commit(h, held, r); }

void ss_h5_abort(ss_h5 *h) {
    if (!h) return;
    close_all(h);
    unlink(h->tmp_path);
    free_writer(h);
}

/* Creates each missing group along path (the whole path when `last`, else
 * only its parents). */
static ss_status make_groups(ss_h5 *h, const char *path, int last) {
    size_t len = strlen(path);
    char *buf = ss_malloc(len + 1, "HDF5 group path");
    if (!buf) return SS_ERR_NOMEM;
    memcpy(buf, path, len + 1);
    ss_status st = SS_OK;
    for (size_t i = 1; i <= len && st == SS_OK; i++) {
        if (buf[i] != '/' && !(buf[i] == 0 && last)) continue;
        char save = buf[i];
        buf[i] = 0;
        htri_t e = H5Lexists(h->file, buf, H5P_DEFAULT);
        if (e < 0) {
            st = h5_fail(SS_ERR_IO, "%s: %s: checking group %s", h->final_path, path, buf);
        } else if (e > 0) {
            hid_t o = H5Oopen(h->file, buf, H5P_DEFAULT);
            if (o < 0) st = h5_fail(SS_ERR_IO, "%s: %s: opening %s", h->final_path, path, buf);
            else {
                if (H5Iget_type(o) != H5I_GROUP)
                    st = ss_errorf(SS_ERR_ARG, "%s: %s: %s exists and is not a group", h->final_path, path, buf);
                H5Oclose(o);
            }
        } else {
            hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
            if (gcpl >= 0) H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
            hid_t g = gcpl < 0 ? -1 : H5Gcreate2(h->file, buf, H5P_DEFAULT, gcpl, H5P_DEFAULT);
            if (g < 0) st = h5_fail(SS_ERR_IO, "%s: %s: creating group %s", h->final_path, path, buf);
            else H5Gclose(g);
            if (gcpl >= 0) H5Pclose(gcpl);
        }
        buf[i] = save;
    }
    free(buf);
    return st;
}

ss_status ss_h5_group_create(ss_h5 *h, const char *path) {
    if (!path_ok(path, 1))
        return ss_errorf(SS_ERR_ARG, "%s: invalid group path '%s' (want /a/b)", h->final_path, path ? path : "(null)");
    if (!strcmp(path, "/")) return SS_OK;
    return make_groups(h, path, 1);
}

int ss_h5_choose_chunk(int ndim, const int64_t *dims, size_t elem_size, int64_t *chunk) {
    const uint64_t target = (uint64_t)1 << 20; /* ~1 MiB: good deflate ratio, small cache */
    const uint64_t row_max = (uint64_t)64 << 20; /* far below HDF5's 4 GiB chunk limit */
    if (ndim <= 0 || elem_size == 0) return 0;
    for (int i = 0; i < ndim; i++)
        if (dims[i] <= 0) return 0;
    for (int i = 0; i < ndim; i++) chunk[i] = 1;
    int i = ndim - 1;
    uint64_t es = elem_size;
    uint64_t inner = (uint64_t)dims[i];
    if (inner <= row_max / es) chunk[i] = dims[i];
    else chunk[i] = (int64_t)(target / es > 0 ? target / es : 1);
    uint64_t bytes = (uint64_t)chunk[i] * es;
    for (i = ndim - 2; i >= 0; i--) {
        if ((uint64_t)dims[i] <= target / bytes) {
            chunk[i] = dims[i];
            bytes *= (uint64_t)dims[i];
            continue;
        }
        uint64_t k = target / bytes;
        chunk[i] = k > 0 ? (int64_t)k : 1;
        break;
    }
    return 1;
}

static ss_status create_raw(ss_h5 *h, const char *path, ss_h5_type type, int ndim, const int64_t *dims,
                            const ss_h5_dset_opts *opts, hid_t *out_id);

/* Root dataset /<name> holding 0..size-1, marked as a dimension scale. */
static ss_status make_scale(ss_h5 *h, const char *name, int64_t size, const char *user, h5_scale **out) {
    char *path = ss_strfmt("/%s", name);
    if (!path) return ss_errorf(SS_ERR_NOMEM, "%s: out of memory", h->final_path);
    int e = obj_exists(h->file, path);
    if (e != 0) {
        ss_status st = e < 0 ? h5_fail(SS_ERR_IO, "%s: checking %s", h->final_path, path)
                             : ss_errorf(SS_ERR_ARG,
                                         "%s: %s: dimension name '%s' clashes with the existing object %s",
                                         h->final_path, user, name, path);
        free(path);
        return st;
    }
    hid_t id = -1;
    ss_status st = create_raw(h, path, SS_H5_I64, 1, &size, NULL, &id);
    if (st != SS_OK) {
        free(path);
        return st;
    }
    enum { PIECE = 1 << 16 };
    int64_t *vals = size > 0 ? ss_malloc(sizeof(int64_t) * (size_t)(size < PIECE ? size : PIECE), "scale values") : NULL;
    if (size > 0 && !vals) st = SS_ERR_NOMEM;
    hid_t fsp = H5Dget_space(id);
    for (int64_t off = 0; st == SS_OK && off < size; off += PIECE) {
        hsize_t cnt = (hsize_t)(size - off < PIECE ? size - off : PIECE);
        for (hsize_t k = 0; k < cnt; k++) vals[k] = off + (int64_t)k;
        hsize_t start = (hsize_t)off;
        hid_t msp = H5Screate_simple(1, &cnt, NULL);
        if (msp < 0 || fsp < 0 || H5Sselect_hyperslab(fsp, H5S_SELECT_SET, &start, NULL, &cnt, NULL) < 0 ||
            H5Dwrite(id, H5T_NATIVE_INT64, msp, fsp, H5P_DEFAULT, vals) < 0)
            st = h5_fail(SS_ERR_IO, "%s: %s: writing dimension scale values", h->final_path, path);
        if (msp >= 0) H5Sclose(msp);
    }
    if (fsp >= 0) H5Sclose(fsp);
    free(vals);
    if (st == SS_OK && H5DSset_scale(id, name) < 0)
        st = h5_fail(SS_ERR_IO, "%s: %s: marking as dimension scale", h->final_path, path);
    free(path);
    if (st == SS_OK && h->n_scales == h->cap_scales) {
        size_t nc = h->cap_scales ? h->cap_scales * 2 : 8;
        h5_scale *ns = ss_realloc(h->scales, nc * sizeof *ns, "dimension scale table");
        if (!ns) st = SS_ERR_NOMEM;
        else {
            h->scales = ns;
            h->cap_scales = nc;
        }
    }
    h5_scale sc = {ss_strdup(name), size, ss_strdup(user), id};
    if (st == SS_OK && (!sc.name || !sc.first_user)) st = ss_errorf(SS_ERR_NOMEM, "%s: out of memory", h->final_path);
    if (st != SS_OK) {
        free(sc.name);
        free(sc.first_user);
        H5Dclose(id);
        return st;
    }
    h->scales[h->n_scales] = sc;
    *out = &h->scales[h->n_scales++];
    return SS_OK;
}

static int dim_name_ok(const char *n) {
    return n && *n && !strchr(n, '/') && strcmp(n, ".") != 0;
}

static ss_status attach_dims(ss_h5 *h, const char *path, hid_t did, int ndim, const int64_t *dims,
                             const char *const *names) {
    for (int i = 0; i < ndim; i++) {
        const char *n = names[i];
        if (!n) continue;
        h5_scale *sc = NULL;
        for (size_t k = 0; k < h->n_scales; k++)
            if (!strcmp(h->scales[k].name, n)) sc = &h->scales[k];
        if (sc && sc->size != dims[i])
            return ss_errorf(SS_ERR_INTERNAL,
                             "%s: dimension '%s' has size %lld in %s (axis %d) but size %lld in %s, which "
                             "introduced it",
                             h->final_path, n, (long long)dims[i], path, i, (long long)sc->size, sc->first_user);
        if (!sc) SS_TRY(make_scale(h, n, dims[i], path, &sc));
        if (H5DSattach_scale(did, sc->id, (unsigned)i) < 0)
            return h5_fail(SS_ERR_IO, "%s: %s: attaching dimension scale '%s' to axis %d", h->final_path, path, n, i);
        if (H5DSset_label(did, (unsigned)i, n) < 0)
            return h5_fail(SS_ERR_IO, "%s: %s: labelling axis %d '%s'", h->final_path, path, i, n);
    }
    return SS_OK;
}

/* Creates the dataset (parents must exist); no dimension scales. */
static ss_status create_raw(ss_h5 *h, const char *path, ss_h5_type type, int ndim, const int64_t *dims,
                            const ss_h5_dset_opts *opts, hid_t *out_id) {
    *out_id = -1;
    size_t es = ss_h5_type_size(type);
    hsize_t hd[SS_H5_MAX_DIMS];
    for (int i = 0; i < ndim; i++) hd[i] = (hsize_t)dims[i];
    hid_t space = ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(ndim, hd, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    ss_status st = SS_OK;
    if (space < 0 || dcpl < 0 || dapl < 0) st = h5_fail(SS_ERR_IO, "%s: %s: creating property lists", h->final_path, path);

    int64_t chunk[SS_H5_MAX_DIMS];
    int chunked = 0;
    if (st == SS_OK) {
        int user_chunk = 0;
        if (opts)
            for (int i = 0; i < ndim; i++) user_chunk |= opts->chunk[i] != 0;
        if (user_chunk) {
            for (int i = 0; i < ndim; i++) {
                if (opts->chunk[i] < 1 || opts->chunk[i] > (dims[i] > 0 ? dims[i] : 1))
                    st = ss_errorf(SS_ERR_ARG, "%s: %s: chunk size %lld on axis %d must be in 1..%lld", h->final_path,
                                   path, (long long)opts->chunk[i], i, (long long)(dims[i] > 0 ? dims[i] : 1));
                chunk[i] = opts->chunk[i];
            }
            /* Empty datasets stay contiguous, as in the automatic case. */
            int64_t probe[SS_H5_MAX_DIMS];
            chunked = st == SS_OK && ss_h5_choose_chunk(ndim, dims, es, probe);
        } else {
            chunked = ss_h5_choose_chunk(ndim, dims, es, chunk);
        }
    }
    if (st == SS_OK && chunked) {
        uint64_t cb = es;
        hsize_t hc[SS_H5_MAX_DIMS];
        for (int i = 0; i < ndim; i++) {
            hc[i] = (hsize_t)chunk[i];
            if (cb > UINT64_MAX / (uint64_t)chunk[i]) cb = UINT64_MAX;
            else cb *= (uint64_t)chunk[i];
        }
        if (cb >= ((uint64_t)1 << 32))
            st = ss_errorf(SS_ERR_ARG, "%s: %s: a chunk of %llu bytes exceeds HDF5's 4 GiB limit", h->final_path,
                           path, (unsigned long long)cb);
        int level = h->deflate;
        if (opts && opts->deflate > 0) level = opts->deflate > 9 ? 9 : opts->deflate;
        if (opts && opts->deflate < 0) level = 0;
        if (st == SS_OK && H5Pset_chunk(dcpl, ndim, hc) < 0)
            st = h5_fail(SS_ERR_IO, "%s: %s: setting chunk shape", h->final_path, path);
        if (st == SS_OK && level > 0 && (H5Pset_shuffle(dcpl) < 0 || H5Pset_deflate(dcpl, (unsigned)level) < 0))
            st = h5_fail(SS_ERR_IO, "%s: %s: enabling shuffle+deflate", h->final_path, path);
        /* The default 1 MiB chunk cache would thrash on bigger chunks. */
        size_t cache = (size_t)(cb * 2 > ((uint64_t)1 << 20) ? cb * 2 : ((uint64_t)1 << 20));
        if (cache > ((size_t)128 << 20)) cache = (size_t)128 << 20;
        if (st == SS_OK && H5Pset_chunk_cache(dapl, 521, cache, 0.75) < 0)
            st = h5_fail(SS_ERR_IO, "%s: %s: setting chunk cache", h->final_path, path);
    }
    if (st == SS_OK) {
        int fill_set = opts && opts->fill_set;
        if (is_float(type)) {
            double f = fill_set ? opts->fill_f64 : NAN;
            if (H5Pset_fill_value(dcpl, H5T_NATIVE_DOUBLE, &f) < 0)
                st = h5_fail(SS_ERR_IO, "%s: %s: setting fill value", h->final_path, path);
        } else {
            int64_t f = fill_set ? opts->fill_i64 : (type == SS_H5_U8 ? 255 : -1);
            int64_t lo = type == SS_H5_U8 ? 0 : type == SS_H5_I32 ? INT32_MIN : INT64_MIN;
            int64_t hi = type == SS_H5_U8 ? 255 : type == SS_H5_I32 ? INT32_MAX : INT64_MAX;
            if (f < lo || f > hi)
                st = ss_errorf(SS_ERR_ARG, "%s: %s: fill value %lld does not fit %s", h->final_path, path,
                               (long long)f, ss_h5_type_name(type));
            else if (H5Pset_fill_value(dcpl, H5T_NATIVE_INT64, &f) < 0)
                st = h5_fail(SS_ERR_IO, "%s: %s: setting fill value", h->final_path, path);
        }
    }
    if (st == SS_OK) {
        *out_id = H5Dcreate2(h->file, path, file_type(type), space, H5P_DEFAULT, dcpl, dapl);
        if (*out_id < 0) st = h5_fail(SS_ERR_IO, "%s: %s: creating dataset", h->final_path, path);
    }
    if (space >= 0) H5Sclose(space);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (dapl >= 0) H5Pclose(dapl);
    return st;
}

ss_status ss_h5_dset_create_opts(ss_h5 *h, const char *path, ss_h5_type type, int ndim, const int64_t *dims,
                                 const char *const *dim_names, const ss_h5_dset_opts *opts, ss_h5_dset **out) {
    *out = NULL;
    if (!h || h->file < 0) return ss_errorf(SS_ERR_ARG, "%s: dataset creation on a closed writer", path ? path : "?");
    if (!path_ok(path, 0))
        return ss_errorf(SS_ERR_ARG, "%s: invalid dataset path '%s' (want /group/name)", h->final_path,
                         path ? path : "(null)");
    if (ss_h5_type_size(type) == 0)
        return ss_errorf(SS_ERR_ARG, "%s: %s: invalid element type %d", h->final_path, path, (int)type);
    if (ndim < 0 || ndim > SS_H5_MAX_DIMS || (ndim > 0 && !dims))
        return ss_errorf(SS_ERR_ARG, "%s: %s: rank %d is not in 0..%d", h->final_path, path, ndim, SS_H5_MAX_DIMS);
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0)
            return ss_errorf(SS_ERR_ARG, "%s: %s: negative size %lld on axis %d", h->final_path, path,
                             (long long)dims[i], i);
        if (dim_names && dim_names[i] && !dim_name_ok(dim_names[i]))
            return ss_errorf(SS_ERR_ARG, "%s: %s: invalid dimension name '%s' on axis %d", h->final_path, path,
                             dim_names[i], i);
        for (int j = 0; dim_names && dim_names[i] && j < i; j++)
            if (dim_names[j] && !strcmp(dim_names[i], dim_names[j]))
                return ss_errorf(SS_ERR_ARG, "%s: %s: dimension name '%s' used on axes %d and %d", h->final_path,
                                 path, dim_names[i], j, i);
    }
    size_t total;
    if (ndim > 0) {
        SS_TRY(ss_dims_product(dims, ndim, &total, path));
        size_t bytes;
        if (!ss_mul_ok(total, ss_h5_type_size(type), &bytes))
            return ss_errorf(SS_ERR_NOMEM, "%s: %s: size overflows", h->final_path, path);
    }
    SS_TRY(make_groups(h, path, 0));
    ss_h5_dset *d = ss_calloc(1, sizeof *d, "HDF5 dataset handle");
    if (!d) return SS_ERR_NOMEM;
    d->path = ss_strdup(path);
    if (!d->path) {
        free(d);
        return ss_errorf(SS_ERR_NOMEM, "%s: out of memory", h->final_path);
    }
    d->type = type;
    d->ndim = ndim;
    for (int i = 0; i < ndim; i++) d->dims[i] = dims[i];
    ss_status st = create_raw(h, path, type, ndim, dims, opts, &d->id);
    if (st == SS_OK && dim_names) st = attach_dims(h, path, d->id, ndim, dims, dim_names);
    if (st != SS_OK) {
        if (d->id >= 0) {
            H5Dclose(d->id);
            /* A half-made dataset would look valid to readers. */
            H5Ldelete(h->file, path, H5P_DEFAULT);
            H5Eclear2(H5E_DEFAULT);
        }
        free(d->path);
        free(d);
        return st;
    }
    d->h = h;
    d->next = h->open_head;
    if (h->open_head) h->open_head->prev = d;
    h->open_head = d;
    *out = d;
    return SS_OK;
}

ss_status ss_h5_dset_create(ss_h5 *h, const char *path, ss_h5_type type, int ndim, const int64_t *dims,
                            const char *const *dim_names, ss_h5_dset **out) {
    return ss_h5_dset_create_opts(h, path, type, ndim, dims, dim_names, NULL, out);
}

ss_status ss_h5_dset_write(ss_h5_dset *d, const int64_t *start, const int64_t *count, const void *buf) {
    return ss_h5_dset_write_rows(d, start, count, NULL, buf);
}

/* ss_h5_dset_write_rows (square 0: lens along axis 1) and
 * ss_h5_dset_write_squares (square 1: lens along the last two axes). */
static ss_status write_items(ss_h5_dset *d, const int64_t *start, const int64_t *count, const int64_t *lens,
                             int square, const void *buf) {
    if (!d || !d->h) return ss_errorf(SS_ERR_ARG, "%s: write to a closed dataset", d ? d->path : "(null)");
    ss_h5 *h = d->h;
    hsize_t hs[SS_H5_MAX_DIMS], hc[SS_H5_MAX_DIMS];
    int empty = 0;
    if (d->ndim > 0 && (!start || !count))
        return ss_errorf(SS_ERR_ARG, "%s: %s: write needs start and count", h->final_path, d->path);
    if (lens && d->ndim < (square ? 3 : 2))
        return ss_errorf(SS_ERR_ARG, "%s: %s: %s need %s axes or more", h->final_path, d->path,
                         square ? "squares of different sides" : "rows of different lengths", square ? "three" : "two");
    for (int i = 0; i < d->ndim; i++) {
        if (start[i] < 0 || count[i] < 0 || count[i] > d->dims[i] || start[i] > d->dims[i] - count[i])
            return ss_errorf(SS_ERR_ARG, "%s: %s: axis %d: [%lld, %lld+%lld) is outside 0..%lld", h->final_path,
                             d->path, i, (long long)start[i], (long long)start[i], (long long)count[i],
                             (long long)d->dims[i]);
        hs[i] = (hsize_t)start[i];
        hc[i] = (hsize_t)count[i];
        empty |= count[i] == 0;
    }
    /* Items of different sizes: item i along axis 0 covers its first lens[i]
     * of count[1] along axis 1 (rows), or of count[ndim-2] and count[ndim-1]
     * along the last two (squares); the buffer holds only those, item after item. */
    const int a0 = square ? d->ndim - 2 : 1, a1 = square ? d->ndim - 1 : 1; /* the axes lens applies to */
    int64_t rows = 0;
    for (int64_t i = 0; lens && !empty && i < count[0]; i++) {
        if (lens[i] < 0 || lens[i] > count[a0] || lens[i] > count[a1])
            return ss_errorf(SS_ERR_ARG, "%s: %s: %s %lld's %s %lld is outside 0..%lld", h->final_path, d->path,
                             square ? "square" : "row", (long long)(start[0] + i), square ? "side" : "length",
                             (long long)lens[i],
                             (long long)(count[a0] < count[a1] ? count[a0] : count[a1]));
        rows += lens[i];
    }
    if (empty || (lens && !rows)) return SS_OK;
    if (!buf) return ss_errorf(SS_ERR_ARG, "%s: %s: NULL buffer", h->final_path, d->path);
    ss_status st = SS_OK;
    hid_t fsp = H5Dget_space(d->id);
    if (fsp < 0) return h5_fail(SS_ERR_IO, "%s: %s: writing", h->final_path, d->path);
    /* One write per item: HDF5 maps a union of the items' blocks onto the
     * chunks element by element (it does so fast only for selections of one
     * shape in memory and file), which doubled the CPU time of a forward. */
    size_t inner = ss_h5_type_size(d->type); /* bytes of the axes lens leaves whole, per length (squared) */
    for (int i = square ? 1 : 2; lens && i < (square ? a0 : d->ndim); i++) inner *= (size_t)hc[i];
    const char *src = buf;
    for (int64_t i = 0; st == SS_OK && i < (lens ? count[0] : 1); i++) {
        if (lens) {
            hs[0] = (hsize_t)(start[0] + i);
            hc[0] = 1;
            hc[a0] = hc[a1] = (hsize_t)lens[i];
            if (!lens[i]) continue;
        }
        hid_t msp = d->ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(d->ndim, hc, NULL);
        if (msp < 0 || (d->ndim > 0 && H5Sselect_hyperslab(fsp, H5S_SELECT_SET, hs, NULL, hc, NULL) < 0) ||
            H5Dwrite(d->id, mem_type(d->type), msp, fsp, H5P_DEFAULT, src) < 0)
            st = h5_fail(SS_ERR_IO, "%s: %s: writing", h->final_path, d->path);
        if (msp >= 0) H5Sclose(msp);
        if (lens) src += (size_t)lens[i] * (square ? (size_t)lens[i] : 1) * inner;
    }
    H5Sclose(fsp);
    return st;
}

ss_status ss_h5_dset_write_rows(ss_h5_dset *d, const int64_t *start, const int64_t *count, const int64_t *lens,
                                const void *buf) {
    return write_items(d, start, count, lens, 0, buf);
}

ss_status ss_h5_dset_write_squares(ss_h5_dset *d, const int64_t *start, const int64_t *count, const int64_t *lens,
                                   const void *buf) {
    return write_items(d, start, count, lens, 1, buf);
}

ss_status ss_h5_dset_close(ss_h5_dset *d) {
    if (!d) return SS_OK;
    ss_status st = SS_OK;
    if (d->h) {
        if (d->id >= 0 && H5Dclose(d->id) < 0)
            st = h5_fail(SS_ERR_IO, "%s: %s: closing dataset", d->h->final_path, d->path);
        if (d->prev) d->prev->next = d->next;
        else d->h->open_head = d->next;
        if (d->next) d->next->prev = d->prev;
    }
    free(d->path);
    free(d);
    return st;
}

ss_status ss_h5_write_array(ss_h5 *h, const char *path, ss_h5_type type, int ndim, const int64_t *dims,
                            const char *const *dim_names, const void *data) {
    ss_h5_dset *d;
    SS_TRY(ss_h5_dset_create(h, path, type, ndim, dims, dim_names, &d));
    int64_t start[SS_H5_MAX_DIMS] = {0};
    ss_status st = ss_h5_dset_write(d, start, dims, data);
    ss_status st2 = ss_h5_dset_close(d);
    return st != SS_OK ? st : st2;
}

/* ------------------------------------------------------------- attributes */

static ss_status attr_write(ss_h5 *h, const char *obj, const char *name, hid_t ftype, hid_t mtype, hid_t space,
                            const void *buf) {
    ss_status st = SS_OK;
    if (!path_ok(obj, 1)) st = ss_errorf(SS_ERR_ARG, "%s: invalid object path '%s'", h->final_path, obj ? obj : "(null)");
    else if (!name || !*name) st = ss_errorf(SS_ERR_ARG, "%s: %s: empty attribute name", h->final_path, obj);
    int e = st == SS_OK ? obj_exists(h->file, obj) : 1;
    if (e < 0) st = h5_fail(SS_ERR_IO, "%s: %s: looking up object", h->final_path, obj);
    else if (e == 0) st = ss_errorf(SS_ERR_ARG, "%s: attribute %s: object %s does not exist", h->final_path, name, obj);
    hid_t o = st == SS_OK ? H5Oopen(h->file, obj, H5P_DEFAULT) : -1;
    if (st == SS_OK && o < 0) st = h5_fail(SS_ERR_IO, "%s: %s: opening object", h->final_path, obj);
    if (st == SS_OK) {
        htri_t ex = H5Aexists(o, name);
        if (ex < 0 || (ex > 0 && H5Adelete(o, name) < 0))
            st = h5_fail(SS_ERR_IO, "%s: %s: replacing attribute %s", h->final_path, obj, name);
    }
    if (st == SS_OK) {
        hid_t a = H5Acreate2(o, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0 || H5Awrite(a, mtype, buf) < 0)
            st = h5_fail(SS_ERR_IO, "%s: %s: writing attribute %s", h->final_path, obj, name);
        if (a >= 0) H5Aclose(a);
    }
    if (o >= 0) H5Oclose(o);
    return st;
}

ss_status ss_h5_attr_str(ss_h5 *h, const char *obj_path, const char *name, const char *value) {
    if (!value) return ss_errorf(SS_ERR_ARG, "%s: %s: attribute %s: NULL string", h->final_path, obj_path, name);
    /* Scalar fixed-length UTF-8, NUL-terminated. A variable-length string
     * would live in the global heap, the one part of the file whose bytes no
     * checksum covers (and which libhdf5 trusts when it reads them); a
     * fixed-length one is stored in the object header, under its checksum. */
    hid_t t = H5Tcopy(H5T_C_S1);
    hid_t sp = H5Screate(H5S_SCALAR);
    ss_status st = SS_OK;
    if (t < 0 || sp < 0 || H5Tset_size(t, strlen(value) + 1) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0 ||
        H5Tset_strpad(t, H5T_STR_NULLTERM) < 0)
        st = h5_fail(SS_ERR_IO, "%s: %s: string type for attribute %s", h->final_path, obj_path, name);
    if (st == SS_OK) st = attr_write(h, obj_path, name, t, t, sp, value);
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    return st;
}

static ss_status attr_num(ss_h5 *h, const char *obj, const char *name, hid_t ft, hid_t mt, const void *v, size_t n,
                          int scalar) {
    hsize_t hn = (hsize_t)n;
    hid_t sp = scalar ? H5Screate(H5S_SCALAR) : n == 0 ? H5Screate(H5S_NULL) : H5Screate_simple(1, &hn, NULL);
    if (sp < 0) return h5_fail(SS_ERR_IO, "%s: %s: dataspace for attribute %s", h->final_path, obj, name);
    ss_status st = attr_write(h, obj, name, ft, mt, sp, v);
    H5Sclose(sp);
    return st;
}

ss_status ss_h5_attr_i64(ss_h5 *h, const char *obj_path, const char *name, int64_t value) {
    return attr_num(h, obj_path, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value, 1, 1);
}
ss_status ss_h5_attr_f64(ss_h5 *h, const char *obj_path, const char *name, double value) {
    return attr_num(h, obj_path, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value, 1, 1);
}
ss_status ss_h5_attr_i64_array(ss_h5 *h, const char *obj_path, const char *name, const int64_t *values, size_t n) {
    return attr_num(h, obj_path, name, H5T_STD_I64LE, H5T_NATIVE_INT64, values, n, 0);
}
ss_status ss_h5_attr_f64_array(ss_h5 *h, const char *obj_path, const char *name, const double *values, size_t n) {
    return attr_num(h, obj_path, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, values, n, 0);
}

/* ----------------------------------------------------------------- reader */

typedef struct {
    haddr_t obj; /* the dataset's address */
    int dim;     /* its axis */
    int scale;   /* index into scale_names */
} dim_ref;

struct ss_h5_reader {
    char *path;
    hid_t file;
    /* Axis names, read once from the scales' REFERENCE_LIST (ss_h5_dim_names). */
    int refs_read;
    dim_ref *refs; /* sorted by (obj, dim) */
    size_t n_refs;
    char **scale_names;
    size_t n_scales;
};

const char *ss_h5_reader_path(const ss_h5_reader *r) { return r ? r->path : NULL; }

ss_status ss_h5_open_read(const char *path, ss_h5_reader **out) {
    *out = NULL;
    h5_quiet();
    if (!path || !*path) return ss_errorf(SS_ERR_ARG, "HDF5 input: empty file name");
    /* Before opening, for every caller: a missing file, a folder, a device or a pipe is refused
     * naming it (HDF5 seeks; a FIFO's open waits for a writer). No folder test of its own here. */
    SS_TRY(ss_input_kind(path, 0));
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ss_errorf(SS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    close(fd);
    htri_t is = H5Fis_hdf5(path);
    if (is < 0) return h5_fail(SS_ERR_IO, "%s: cannot check the HDF5 signature", path);
    if (is == 0) return ss_errorf(SS_ERR_FORMAT, "%s: not an HDF5 file (no HDF5 signature)", path);
    ss_h5_reader *r = ss_calloc(1, sizeof *r, "HDF5 reader");
    if (!r) return SS_ERR_NOMEM;
    r->path = ss_strdup(path);
    hid_t fapl = make_fapl();
    r->file = fapl < 0 ? -1 : H5Fopen(path, H5F_ACC_RDONLY, fapl);
    ss_status st = r->file < 0 ? h5_fail(SS_ERR_FORMAT, "%s: cannot open as HDF5", path)
                 : !r->path    ? ss_errorf(SS_ERR_NOMEM, "%s: out of memory", path)
                               : SS_OK;
    if (fapl >= 0) H5Pclose(fapl);
    if (st != SS_OK) {
        if (r->file >= 0) H5Fclose(r->file);
        free(r->path);
        free(r);
        return st;
    }
    *out = r;
    return SS_OK;
}

void ss_h5_close_read(ss_h5_reader *r) {
    if (!r) return;
    free(r->refs);
    ss_h5_free_names(r->scale_names, r->n_scales);
    if (r->file >= 0) H5Fclose(r->file);
    H5Eclear2(H5E_DEFAULT);
    free(r->path);
    free(r);
}

int ss_h5_exists(ss_h5_reader *r, const char *path) {
    if (!path_ok(path, 1)) return 0;
    int e = obj_exists(r->file, path);
    H5Eclear2(H5E_DEFAULT);
    return e > 0;
}

int ss_h5_attr_exists(ss_h5_reader *r, const char *obj_path, const char *name) {
    if (!path_ok(obj_path, 1) || obj_exists(r->file, obj_path) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return 0;
    }
    htri_t ex = H5Aexists_by_name(r->file, obj_path, name, H5P_DEFAULT);
    H5Eclear2(H5E_DEFAULT);
    return ex > 0;
}

static ss_status open_dset(ss_h5_reader *r, const char *path, hid_t *id) {
    *id = -1;
    if (!path_ok(path, 0)) return ss_errorf(SS_ERR_ARG, "%s: invalid dataset path '%s'", r->path, path ? path : "(null)");
    int e = obj_exists(r->file, path);
    if (e < 0) return h5_fail(SS_ERR_IO, "%s: %s: looking up dataset", r->path, path);
    if (e == 0) return ss_errorf(SS_ERR_ARG, "%s: no dataset %s", r->path, path);
    hid_t o = H5Oopen(r->file, path, H5P_DEFAULT);
    if (o < 0) return h5_fail(SS_ERR_FORMAT, "%s: %s: opening", r->path, path);
    if (H5Iget_type(o) != H5I_DATASET) {
        H5Oclose(o);
        return ss_errorf(SS_ERR_ARG, "%s: %s is not a dataset", r->path, path);
    }
    *id = o;
    return SS_OK;
}

/* A dimension scale: CLASS is the string "DIMENSION_SCALE", read with the
 * checks of any string attribute (one element, a string type), as the
 * scale's NAME is below. */
static int is_scale(ss_h5_reader *r, const char *path) {
    char *c = NULL;
    int yes = H5Aexists_by_name(r->file, path, "CLASS", H5P_DEFAULT) > 0 &&
              ss_h5_read_attr_str(r, path, "CLASS", &c) == SS_OK && !strcmp(c, "DIMENSION_SCALE");
    free(c);
    ss_error_clear();
    H5Eclear2(H5E_DEFAULT);
    return yes;
}

static ss_status info_of(ss_h5_reader *r, const char *path, hid_t id, ss_h5_info *info) {
    memset(info, 0, sizeof *info);
    ss_status st = SS_OK;
    hid_t sp = H5Dget_space(id);
    hid_t t = H5Dget_type(id);
    hid_t dcpl = H5Dget_create_plist(id);
    if (sp < 0 || t < 0 || dcpl < 0) st = h5_fail(SS_ERR_FORMAT, "%s: %s: reading dataset header", r->path, path);
    if (st == SS_OK) {
        int nd = H5Sget_simple_extent_ndims(sp);
        hsize_t hd[SS_H5_MAX_DIMS];
        if (nd < 0 || nd > SS_H5_MAX_DIMS || H5Sget_simple_extent_dims(sp, hd, NULL) < 0)
            st = h5_fail(SS_ERR_FORMAT, "%s: %s: reading shape", r->path, path);
        else {
            info->ndim = nd;
            for (int i = 0; i < nd; i++) {
                if (hd[i] > (hsize_t)INT64_MAX) st = ss_errorf(SS_ERR_FORMAT, "%s: %s: axis %d too large", r->path, path, i);
                info->dims[i] = (int64_t)hd[i];
            }
            if (H5Sget_simple_extent_type(sp) == H5S_NULL) {
                info->ndim = 1;
                info->dims[0] = 0;
            }
        }
    }
    if (st == SS_OK) {
        H5T_class_t c = H5Tget_class(t);
        info->cls = c == H5T_INTEGER ? SS_H5_CLASS_INT
                  : c == H5T_FLOAT   ? SS_H5_CLASS_FLOAT
                  : c == H5T_STRING  ? SS_H5_CLASS_STRING
                                     : SS_H5_CLASS_OTHER;
        info->elem_size = H5Tget_size(t);
        info->is_signed = c == H5T_INTEGER && H5Tget_sign(t) == H5T_SGN_2;
        info->is_scale = is_scale(r, path);
        if (H5Pget_layout(dcpl) == H5D_CHUNKED) {
            hsize_t hc[SS_H5_MAX_DIMS];
            int nc = H5Pget_chunk(dcpl, SS_H5_MAX_DIMS, hc);
            info->chunked = nc > 0;
            for (int i = 0; i < nc; i++) info->chunk[i] = (int64_t)hc[i];
        }
        int nf = H5Pget_nfilters(dcpl);
        for (int i = 0; i < nf; i++) {
            unsigned flags, cd[8];
            size_t ncd = 8;
            char fname[64];
            unsigned fcfg;
            H5Z_filter_t f = H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd, cd, sizeof fname, fname, &fcfg);
            if (f == H5Z_FILTER_DEFLATE) info->deflate = ncd > 0 ? (int)cd[0] : 1;
            if (f == H5Z_FILTER_SHUFFLE) info->shuffle = 1;
        }
        H5Eclear2(H5E_DEFAULT);
    }
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (dcpl >= 0) H5Pclose(dcpl);
    return st;
}

ss_status ss_h5_dset_info(ss_h5_reader *r, const char *path, ss_h5_info *info) {
    hid_t id;
    SS_TRY(open_dset(r, path, &id));
    ss_status st = info_of(r, path, id, info);
    H5Dclose(id);
    return st;
}

static ss_status check_numeric(ss_h5_reader *r, const char *path, const ss_h5_info *info, ss_h5_type as) {
    if (ss_h5_type_size(as) == 0) return ss_errorf(SS_ERR_ARG, "%s: %s: invalid element type %d", r->path, path, (int)as);
    if (info->cls != SS_H5_CLASS_INT && info->cls != SS_H5_CLASS_FLOAT)
        return ss_errorf(SS_ERR_FORMAT, "%s: %s holds %s, not numbers; cannot read it as %s", r->path, path,
                         info->cls == SS_H5_CLASS_STRING ? "strings" : "a compound/other type", ss_h5_type_name(as));
    return SS_OK;
}

/* want: the element count the dataset must have, SIZE_MAX for any */
static ss_status read_whole(ss_h5_reader *r, const char *path, ss_h5_type as, size_t want, void **data, size_t *n,
                            ss_h5_info *info) {
    *data = NULL;
    *n = 0;
    hid_t id;
    SS_TRY(open_dset(r, path, &id));
    ss_h5_info local;
    ss_h5_info *in = info ? info : &local;
    ss_status st = info_of(r, path, id, in);
    if (st == SS_OK) st = check_numeric(r, path, in, as);
    size_t count = 1, bytes = 0;
    if (st == SS_OK && in->ndim > 0) st = ss_dims_product(in->dims, in->ndim, &count, path);
    if (st == SS_OK && want != SIZE_MAX && count != want)
        st = ss_errorf(SS_ERR_FORMAT, "%s: %s holds %zu values, not the %zu expected", r->path, path, count, want);
    if (st == SS_OK && !ss_mul_ok(count, ss_h5_type_size(as), &bytes))
        st = ss_errorf(SS_ERR_NOMEM, "%s: %s: size overflows", r->path, path);
    void *buf = NULL;
    if (st == SS_OK) {
        buf = ss_malloc(bytes ? bytes : 1, path);
        if (!buf) st = SS_ERR_NOMEM;
    }
    if (st == SS_OK && count > 0 && H5Dread(id, mem_type(as), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        st = h5_fail(SS_ERR_FORMAT, "%s: %s: reading as %s", r->path, path, ss_h5_type_name(as));
    H5Dclose(id);
    if (st != SS_OK) {
        free(buf);
        return st;
    }
    *data = buf;
    *n = count;
    return SS_OK;
}

ss_status ss_h5_read(ss_h5_reader *r, const char *path, ss_h5_type as, void **data, size_t *n, ss_h5_info *info) {
    return read_whole(r, path, as, SIZE_MAX, data, n, info);
}
ss_status ss_h5_read_want(ss_h5_reader *r, const char *path, ss_h5_type as, size_t want, void **data, ss_h5_info *info) {
    size_t n;
    return read_whole(r, path, as, want, data, &n, info);
}

ss_status ss_h5_read_f32(ss_h5_reader *r, const char *path, float **data, size_t *n, ss_h5_info *info) {
    return ss_h5_read(r, path, SS_H5_F32, (void **)data, n, info);
}
ss_status ss_h5_read_f64(ss_h5_reader *r, const char *path, double **data, size_t *n, ss_h5_info *info) {
    return ss_h5_read(r, path, SS_H5_F64, (void **)data, n, info);
}
ss_status ss_h5_read_i32(ss_h5_reader *r, const char *path, int32_t **data, size_t *n, ss_h5_info *info) {
    return ss_h5_read(r, path, SS_H5_I32, (void **)data, n, info);
}
ss_status ss_h5_read_i64(ss_h5_reader *r, const char *path, int64_t **data, size_t *n, ss_h5_info *info) {
    return ss_h5_read(r, path, SS_H5_I64, (void **)data, n, info);
}

ss_status ss_h5_read_slab(ss_h5_reader *r, const char *path, ss_h5_type as, const int64_t *start,
                          const int64_t *count, void *buf) {
    hid_t id;
    SS_TRY(open_dset(r, path, &id));
    ss_h5_info info;
    ss_status st = info_of(r, path, id, &info);
    if (st == SS_OK) st = check_numeric(r, path, &info, as);
    hsize_t hs[SS_H5_MAX_DIMS], hc[SS_H5_MAX_DIMS];
    int empty = 0;
    for (int i = 0; st == SS_OK && i < info.ndim; i++) {
        if (start[i] < 0 || count[i] < 0 || count[i] > info.dims[i] || start[i] > info.dims[i] - count[i])
            st = ss_errorf(SS_ERR_ARG, "%s: %s: axis %d: [%lld, %lld+%lld) is outside 0..%lld", r->path, path, i,
                           (long long)start[i], (long long)start[i], (long long)count[i], (long long)info.dims[i]);
        hs[i] = (hsize_t)start[i];
        hc[i] = (hsize_t)count[i];
        empty |= count[i] == 0;
    }
    if (st == SS_OK && !empty) {
        hid_t fsp = H5Dget_space(id);
        hid_t msp = info.ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(info.ndim, hc, NULL);
        if (fsp < 0 || msp < 0 ||
            (info.ndim > 0 && H5Sselect_hyperslab(fsp, H5S_SELECT_SET, hs, NULL, hc, NULL) < 0) ||
            H5Dread(id, mem_type(as), msp, fsp, H5P_DEFAULT, buf) < 0)
            st = h5_fail(SS_ERR_FORMAT, "%s: %s: reading a hyperslab as %s", r->path, path, ss_h5_type_name(as));
        if (fsp >= 0) H5Sclose(fsp);
        if (msp >= 0) H5Sclose(msp);
    }
    H5Dclose(id);
    return st;
}

/* written: the elements known written (SIZE_MAX: all of them) */
static ss_status dset_stores(ss_h5_reader *r, const char *path, size_t written) {
    hid_t id;
    SS_TRY(open_dset(r, path, &id));
    ss_h5_info info;
    ss_status st = info_of(r, path, id, &info);
    size_t count = 1, bytes = SIZE_MAX;
    if (st == SS_OK && info.ndim > 0) st = ss_dims_product(info.dims, info.ndim, &count, path);
    if (st == SS_OK) (void)ss_mul_ok(written < count ? written : count, info.elem_size, &bytes); /* SIZE_MAX when it overflows */
    const hsize_t stored = st == SS_OK ? H5Dget_storage_size(id) : 0;
    H5Eclear2(H5E_DEFAULT);
    H5Dclose(id);
    if (st == SS_OK && bytes > ((size_t)1 << 20) && stored < bytes / 2048) {
        if (written >= count)
            st = ss_errorf(SS_ERR_FORMAT,
                           "%s: %s declares %zu bytes but stores %llu: most of it was never written (it is written "
                           "whole)",
                           r->path, path, bytes, (unsigned long long)stored);
        else
            st = ss_errorf(SS_ERR_FORMAT, "%s: %s stores %llu bytes, under 1/2048 of the %zu its written part declares: "
                           "most of it was never written",
                           r->path, path, (unsigned long long)stored, bytes);
    }
    return st;
}

ss_status ss_h5_dset_written(ss_h5_reader *r, const char *path) { return dset_stores(r, path, SIZE_MAX); }
ss_status ss_h5_dset_written_part(ss_h5_reader *r, const char *path, size_t elems) {
    return dset_stores(r, path, elems);
}

ss_status ss_h5_read_diag(ss_h5_reader *r, const char *path, int64_t d, double *diag) {
    ss_h5_info info;
    SS_TRY(ss_h5_dset_info(r, path, &info));
    if (info.ndim != 2 || info.dims[0] != d || info.dims[1] != d)
        return ss_errorf(SS_ERR_FORMAT, "%s: %s is not [%lld, %lld]", r->path, path, (long long)d, (long long)d);
    SS_TRY(ss_h5_dset_written(r, path));
    if (d <= 0) return SS_OK;
    const int64_t rows = d <= ((int64_t)1 << 20) ? ((int64_t)1 << 20) / d + 1 : 1;
    double *buf = ss_malloc((size_t)(rows * d) * sizeof(double), path);
    if (!buf) return SS_ERR_NOMEM;
    ss_status st = SS_OK;
    for (int64_t r0 = 0; r0 < d && !st; r0 += rows) {
        const int64_t nr = d - r0 < rows ? d - r0 : rows, start[2] = {r0, 0}, count[2] = {nr, d};
        if (!(st = ss_h5_read_slab(r, path, SS_H5_F64, start, count, buf)))
            for (int64_t i = 0; i < nr; i++) diag[r0 + i] = buf[i * d + r0 + i];
    }
    free(buf);
    return st;
}

static ss_status open_attr(ss_h5_reader *r, const char *obj, const char *name, hid_t *a) {
    *a = -1;
    if (!path_ok(obj, 1)) return ss_errorf(SS_ERR_ARG, "%s: invalid object path '%s'", r->path, obj ? obj : "(null)");
    int e = obj_exists(r->file, obj);
    if (e < 0) return h5_fail(SS_ERR_IO, "%s: %s: looking up object", r->path, obj);
    if (e == 0) return ss_errorf(SS_ERR_ARG, "%s: no object %s (looking for attribute %s)", r->path, obj, name);
    htri_t ex = H5Aexists_by_name(r->file, obj, name, H5P_DEFAULT);
    if (ex < 0) return h5_fail(SS_ERR_IO, "%s: %s: looking up attribute %s", r->path, obj, name);
    if (ex == 0) return ss_errorf(SS_ERR_ARG, "%s: %s has no attribute %s", r->path, obj, name);
    *a = H5Aopen_by_name(r->file, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    if (*a < 0) return h5_fail(SS_ERR_FORMAT, "%s: %s: opening attribute %s", r->path, obj, name);
    return SS_OK;
}

static ss_status attr_one(ss_h5_reader *r, hid_t a, const char *obj, const char *name) {
    hid_t sp = H5Aget_space(a);
    hssize_t np = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    if (sp >= 0) H5Sclose(sp);
    if (np != 1) return ss_errorf(SS_ERR_FORMAT, "%s: %s: attribute %s has %lld elements, expected one", r->path, obj, name, (long long)np);
    return SS_OK;
}

ss_status ss_h5_read_attr_str(ss_h5_reader *r, const char *obj_path, const char *name, char **value) {
    *value = NULL;
    hid_t a;
    SS_TRY(open_attr(r, obj_path, name, &a));
    ss_status st = attr_one(r, a, obj_path, name);
    hid_t ft = H5Aget_type(a);
    if (st == SS_OK && (ft < 0 || H5Tget_class(ft) != H5T_STRING))
        st = ss_errorf(SS_ERR_FORMAT, "%s: %s: attribute %s is not a string", r->path, obj_path, name);
    hid_t mt = st == SS_OK ? H5Tcopy(ft) : -1;
    if (st == SS_OK && mt < 0) st = h5_fail(SS_ERR_IO, "%s: %s: attribute %s type", r->path, obj_path, name);
    if (st == SS_OK && H5Tis_variable_str(ft) > 0) {
        char *s = NULL;
        if (H5Aread(a, mt, &s) < 0) st = h5_fail(SS_ERR_FORMAT, "%s: %s: reading attribute %s", r->path, obj_path, name);
        else {
            *value = ss_strdup(s ? s : "");
            if (!*value) st = ss_errorf(SS_ERR_NOMEM, "%s: out of memory", r->path);
        }
        if (s) H5free_memory(s);
    } else if (st == SS_OK) {
        size_t sz = H5Tget_size(ft);
        char *buf = ss_malloc(sz + 1, "string attribute");
        if (!buf) st = SS_ERR_NOMEM;
        else if (H5Aread(a, mt, buf) < 0) {
            st = h5_fail(SS_ERR_FORMAT, "%s: %s: reading attribute %s", r->path, obj_path, name);
            free(buf);
        } else {
            buf[sz] = 0;
            /* Space-padded strings (Fortran style) keep their text only. */
            if (H5Tget_strpad(ft) == H5T_STR_SPACEPAD)
                for (size_t k = strlen(buf); k > 0 && buf[k - 1] == ' '; k--) buf[k - 1] = 0;
            *value = buf;
        }
    }
    if (mt >= 0) H5Tclose(mt);
    if (ft >= 0) H5Tclose(ft);
    H5Aclose(a);
    return st;
}

static ss_status read_attr_num(ss_h5_reader *r, const char *obj, const char *name, hid_t mt, void *v) {
    hid_t a;
    SS_TRY(open_attr(r, obj, name, &a));
    ss_status st = attr_one(r, a, obj, name);
    hid_t ft = H5Aget_type(a);
    H5T_class_t c = ft >= 0 ? H5Tget_class(ft) : H5T_NO_CLASS;
    if (st == SS_OK && c != H5T_INTEGER && c != H5T_FLOAT)
        st = ss_errorf(SS_ERR_FORMAT, "%s: %s: attribute %s is not a number", r->path, obj, name);
    if (st == SS_OK && H5Aread(a, mt, v) < 0) st = h5_fail(SS_ERR_FORMAT, "%s: %s: reading attribute %s", r->path, obj, name);
    if (ft >= 0) H5Tclose(ft);
    H5Aclose(a);
    return st;
}

ss_status ss_h5_read_attr_i64(ss_h5_reader *r, const char *obj_path, const char *name, int64_t *value) {
    return read_attr_num(r, obj_path, name, H5T_NATIVE_INT64, value);
}
ss_status ss_h5_read_attr_f64(ss_h5_reader *r, const char *obj_path, const char *name, double *value) {
    return read_attr_num(r, obj_path, name, H5T_NATIVE_DOUBLE, value);
}

void ss_h5_free_names(char **names, size_t n) {
    if (!names) return;
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* An object's address in the file: the key of its REFERENCE_LIST entries. */
static int object_addr(hid_t id, haddr_t *addr) {
#if H5_VERSION_GE(1, 12, 0)
    H5O_info2_t oi;
    return H5Oget_info3(id, &oi, H5O_INFO_BASIC) < 0 || H5VLnative_token_to_addr(id, oi.token, addr) < 0 ? -1 : 0;
#else
    H5O_info_t oi;
    if (H5Oget_info2(id, &oi, H5O_INFO_BASIC) < 0) return -1;
    *addr = oi.addr;
    return 0;
#endif
}

static int cmp_dim_ref(const void *a, const void *b) {
    const dim_ref *x = a, *y = b;
    return x->obj != y->obj ? (x->obj < y->obj ? -1 : 1) : (x->dim > y->dim) - (x->dim < y->dim);
}

/* A scale's name: its NAME attribute, else its dataset's name (malloc'd).
 * Read as any string attribute is (H5DSget_scale_name trusts the attribute
 * to be a string and overruns its buffer when it is not). */
static char *scale_name(ss_h5_reader *r, const char *path) {
    char *name = NULL;
    if (ss_h5_read_attr_str(r, path, "NAME", &name) != SS_OK || !name[0]) {
        free(name);
        name = ss_strdup(base_name(path));
    }
    ss_error_clear();
    return name;
}

/* Every scale's REFERENCE_LIST: which axis of which dataset it labels.
 * The datasets' own DIMENSION_LIST says the same, but it is variable-length
 * data in the global heap, which no checksum covers and which libhdf5
 * trusts when it reads it; a scale's REFERENCE_LIST is fixed-size data in
 * its object header, under that header's checksum. Refs to objects that are
 * gone or unreadable are skipped. */
static ss_status read_dim_refs(ss_h5_reader *r) {
    if (r->refs_read) return SS_OK;
    char **paths = NULL;
    size_t np = 0;
    SS_TRY(ss_h5_list(r, "/", 1, &paths, &np));
    ss_status st = SS_OK;
    typedef struct {
        hobj_ref_t ref;
        int dim;
    } ref_entry;
    hid_t mt = H5Tcreate(H5T_COMPOUND, sizeof(ref_entry));
    if (mt < 0 || H5Tinsert(mt, "dataset", offsetof(ref_entry, ref), H5T_STD_REF_OBJ) < 0 ||
        H5Tinsert(mt, "dimension", offsetof(ref_entry, dim), H5T_NATIVE_INT) < 0)
        st = h5_fail(SS_ERR_IO, "%s: reference list type", r->path);
    for (size_t i = 0; i < np && st == SS_OK; i++) {
        hid_t id = H5Dopen2(r->file, paths[i], H5P_DEFAULT);
        if (id < 0) {
            st = h5_fail(SS_ERR_FORMAT, "%s: %s: opening dataset", r->path, paths[i]);
            break;
        }
        hid_t a = is_scale(r, paths[i]) && H5Aexists(id, "REFERENCE_LIST") > 0 ? H5Aopen(id, "REFERENCE_LIST", H5P_DEFAULT) : -1;
        hid_t sp = a >= 0 ? H5Aget_space(a) : -1;
        hssize_t n = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : 0;
        ref_entry *e = n > 0 ? ss_malloc((size_t)n * sizeof *e, "dimension scale references") : NULL;
        if (n > 0 && !e) st = SS_ERR_NOMEM;
        else if (e && H5Aread(a, mt, e) >= 0) {
            char *name = scale_name(r, paths[i]);
            char **sn = name ? ss_realloc(r->scale_names, (r->n_scales + 1) * sizeof *sn, "dimension scale names") : NULL;
            if (sn) r->scale_names = sn;
            dim_ref *nr = sn ? ss_realloc(r->refs, (r->n_refs + (size_t)n) * sizeof *nr, "dimension scale references") : NULL;
            if (!nr) {
                free(name);
                st = SS_ERR_NOMEM;
            } else {
                r->refs = nr;
                sn[r->n_scales] = name;
                for (hssize_t k = 0; k < n; k++) {
                    hid_t o = H5Rdereference2(id, H5P_DEFAULT, H5R_OBJECT, &e[k].ref);
                    haddr_t addr;
                    if (o >= 0 && object_addr(o, &addr) == 0)
                        r->refs[r->n_refs++] = (dim_ref){addr, e[k].dim, (int)r->n_scales};
                    if (o >= 0) H5Oclose(o);
                }
                r->n_scales++;
            }
        }
        free(e);
        if (sp >= 0) H5Sclose(sp);
        if (a >= 0) H5Aclose(a);
        H5Dclose(id);
    }
    if (mt >= 0) H5Tclose(mt);
    ss_h5_free_names(paths, np);
    H5Eclear2(H5E_DEFAULT);
    if (st != SS_OK) return st;
    if (r->n_refs > 1) qsort(r->refs, r->n_refs, sizeof *r->refs, cmp_dim_ref);
    r->refs_read = 1;
    return SS_OK;
}

ss_status ss_h5_dim_names(ss_h5_reader *r, const char *path, char ***names, int *ndim) {
    *names = NULL;
    *ndim = 0;
    SS_TRY(read_dim_refs(r));
    hid_t id;
    SS_TRY(open_dset(r, path, &id));
    ss_h5_info info;
    ss_status st = info_of(r, path, id, &info);
    haddr_t addr = 0;
    if (st == SS_OK && info.ndim > 0 && object_addr(id, &addr) < 0)
        st = h5_fail(SS_ERR_FORMAT, "%s: %s: object address", r->path, path);
    H5Dclose(id);
    char **out = NULL;
    if (st == SS_OK && info.ndim > 0) {
        out = ss_calloc((size_t)info.ndim, sizeof *out, "dimension names");
        if (!out) st = SS_ERR_NOMEM;
    }
    for (int i = 0; st == SS_OK && i < info.ndim; i++) {
        const dim_ref key = {addr, i, 0};
        const dim_ref *f = r->n_refs ? bsearch(&key, r->refs, r->n_refs, sizeof key, cmp_dim_ref) : NULL;
        if (f && !(out[i] = ss_strdup(r->scale_names[f->scale]))) st = SS_ERR_NOMEM;
    }
    if (st != SS_OK) {
        ss_h5_free_names(out, out ? (size_t)info.ndim : 0);
        return st;
    }
    *names = out;
    *ndim = info.ndim;
    return SS_OK;
}

typedef struct {
    const char *prefix; /* group path, "/" or "/a/b" */
    char **v;
    size_t n, cap;
    int oom, deep;
    size_t visited; /* links seen: a damaged file's groups that link to each other more than once stay shallow */
} list_ctx;

/* H5Lvisit skips a group it has seen only when the group's header counts
 * more than one link to it, so a damaged file whose group links to itself
 * (count 1) was walked without end (a fuzz-found hang, memory growing):
 * a path nested deeper than subscope ever writes ends the listing. */
#define SS_H5_MAX_DEPTH 64
/* ... and one whose groups link to themselves more than once branches without getting deep: a
 * listing ends after this many links (subscope's largest files hold some hundred thousand). */
#define SS_H5_MAX_LINKS ((size_t)1 << 24)

static herr_t list_cb(hid_t g, const char *name, const H5L_info_t *li, void *p) {
    list_ctx *c = p;
    if (li->type != H5L_TYPE_HARD) return 0;
    int depth = 0;
    for (const char *q = name; *q; q++) depth += *q == '/';
    if (depth >= SS_H5_MAX_DEPTH || ++c->visited > SS_H5_MAX_LINKS) {
        c->deep = 1;
        return -1;
    }
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) {
        H5Eclear2(H5E_DEFAULT);
        return 0;
    }
    int is_dset = H5Iget_type(o) == H5I_DATASET;
    H5Oclose(o);
    if (!is_dset) return 0;
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 16;
        char **nv = realloc(c->v, nc * sizeof *nv);
        if (!nv) {
            c->oom = 1;
            return -1;
        }
        c->v = nv;
        c->cap = nc;
    }
    char *full = strcmp(c->prefix, "/") ? ss_strfmt("%s/%s", c->prefix, name) : ss_strfmt("/%s", name);
    if (!full) {
        c->oom = 1;
        return -1;
    }
    c->v[c->n++] = full;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

ss_status ss_h5_list(ss_h5_reader *r, const char *group, int recursive, char ***paths, size_t *n) {
    *paths = NULL;
    *n = 0;
    if (!path_ok(group, 1)) return ss_errorf(SS_ERR_ARG, "%s: invalid group path '%s'", r->path, group ? group : "(null)");
    int e = obj_exists(r->file, group);
    if (e < 0) return h5_fail(SS_ERR_IO, "%s: %s: looking up group", r->path, group);
    if (e == 0) return ss_errorf(SS_ERR_ARG, "%s: no group %s", r->path, group);
    hid_t g = H5Oopen(r->file, group, H5P_DEFAULT);
    if (g < 0) return h5_fail(SS_ERR_FORMAT, "%s: %s: opening group", r->path, group);
    if (H5Iget_type(g) != H5I_GROUP) {
        H5Oclose(g);
        return ss_errorf(SS_ERR_ARG, "%s: %s is not a group", r->path, group);
    }
    list_ctx c = {group, NULL, 0, 0, 0, 0, 0};
    /* In native order (the paths are sorted below): for a group with many
     * links, any other order first copies the links into a table, and when
     * a damaged B-tree node fails its checksum half-way, libhdf5 1.10 frees
     * that table's unfilled entries, garbage (an ASan-found crash). */
    herr_t rc = recursive ? H5Lvisit(g, H5_INDEX_NAME, H5_ITER_NATIVE, list_cb, &c)
                          : H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, list_cb, &c);
    ss_status st = SS_OK;
    if (c.oom) st = ss_errorf(SS_ERR_NOMEM, "%s: out of memory listing %s", r->path, group);
    else if (c.deep)
        st = ss_errorf(SS_ERR_FORMAT, "%s: %s: groups nested more than %d deep, or more than %zu links (a link cycle in a damaged file?)",
                       r->path, group, SS_H5_MAX_DEPTH, SS_H5_MAX_LINKS);
    else if (rc < 0) st = h5_fail(SS_ERR_FORMAT, "%s: %s: listing datasets", r->path, group);
    H5Oclose(g);
    if (st != SS_OK) {
        ss_h5_free_names(c.v, c.n);
        return st;
    }
    if (c.n > 1) qsort(c.v, c.n, sizeof *c.v, cmp_str);
    *paths = c.v;
    *n = c.n;
    return SS_OK;
}
