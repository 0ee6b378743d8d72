/* conv_shim.c: fast CPU convolutions for MindSpore 2.10's bundled oneDNN (libdnnl.so.3), AVX-512 or AVX2.
 *
 * MindSpore gives oneDNN plain NCHW data and plain OIHW weights. This library defines the C-API functions
 * MindSpore calls to create and run convolutions, and changes two things without MindSpore noticing:
 *
 * 1. Plain layouts. oneDNN's first candidate for them on AVX-512, "jit_uni_ncsp", keeps the plain weights
 *    that its fast kernels refuse and ends in a reference kernel of about 1 GFLOP/s. While it is chosen,
 *    ask oneDNN for its next implementation (dnnl_primitive_desc_next_impl): "x64:gemm:jit", im2col +
 *    sgemm. (On AVX2 oneDNN takes gemm for plain layouts by itself.)
 * 2. Blocked layouts. For a convolution with at least BLOCKED_MIN_POSITIONS output positions (batch x
 *    height x width), also create it with layouts left to oneDNN ("any"): it picks blocked layouts and the
 *    direct kernels of the ISA it runs with (jit:avx512_core, brgconv:avx512_core; jit:avx2, brgconv:avx2
 *    on AVX2 machines or under ONEDNN_MAX_CPU_ISA=AVX2). That one runs instead, with MindSpore's plain
 *    tensors reordered in and the results reordered out. The weight reorders cost in proportion to the
 *    weights, the convolution in proportion to weights x positions, so the U-Net's inner 512-channel
 *    layers (few positions, large weights) stay on gemm, as does a backward-data that writes fewer than
 *    BLOCKED_MIN_CHANNELS channels (padded to 16 in blocked layouts). Measured per layer on the full
 *    step with `python -m pix2pix.tools.bench --profile 3 --variants fast,gemm` (and fast-avx2,gemm-avx2:
 *    every layer above the threshold gains on AVX2 too). One difference on AVX2: gemm's backward-data (the
 *    U-Net's inner transposed convolutions) runs at 70-85 GFLOP/s there (120-150 on AVX-512), so there a
 *    backward-data runs blocked from AVX2_BACKWARD_DATA_MIN_POSITIONS (2.5-4 % of the step, measured
 *    side by side in one process; on AVX-512 the same change measured nothing).
 *    PIX2PIX_CPU_FASTPATH=gemm keeps every convolution on gemm.
 *
 * Inference with weights that never change (pix2pix_constant_weights(1) around it, per thread): forward
 * convolutions the thread creates meanwhile reorder their weights into blocked layout once, at their first
 * run, and keep them; with no weight reorder per call, they run blocked at any number of positions.
 *
 * Loaded before MindSpore (pix2pix/backend/fastpath.py: RTLD_GLOBAL, so MindSpore's calls resolve here first);
 * oneDNN itself is found with dlopen(RTLD_NOLOAD) once MindSpore has loaded it. pix2pix_conv_impls(kind)
 * reports the implementations of the convolution primitives created so far (0 forward, 1 backward-data,
 * 2 backward-weights), so the framework can log what runs; pix2pix_isa() the ISA oneDNN runs with.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BLOCKED_MIN_POSITIONS = 768, AVX2_BACKWARD_DATA_MIN_POSITIONS = 64, BLOCKED_MIN_CHANNELS = 16 };

/* The oneDNN 3.x C API, as far as used here (values from oneapi/dnnl/dnnl_types.h). */
typedef int status_t; /* 0 is dnnl_success */
typedef void *pd_t;   /* dnnl_primitive_desc_t; memory descs, engines, attributes, primitives: void * */
typedef const void *handle_t;
typedef const int64_t *dims_t;
typedef struct { int arg; void *memory; } exec_arg_t;

enum { STATUS_RUNTIME_ERROR = 5, QUERY_ENGINE = 1, QUERY_IMPL_INFO_STR = 8 };
enum { QUERY_SRC_MD = 129, QUERY_DIFF_SRC_MD, QUERY_WEIGHTS_MD, QUERY_DIFF_WEIGHTS_MD, QUERY_DST_MD,
       QUERY_DIFF_DST_MD };
enum { QUERY_NDIMS = 256, QUERY_DIMS, QUERY_DATA_TYPE };
enum { FORMAT_TAG_ANY = 1, SCRATCHPAD_LIBRARY = 0 };
enum { ARG_SRC = 1, ARG_DST = 17, ARG_WEIGHTS = 33, ARG_BIAS = 41, ARG_SCRATCHPAD = 80, ARG_DIFF_SRC = 129,
       ARG_DIFF_DST = 145, ARG_DIFF_WEIGHTS = 161, ARG_DIFF_BIAS = 169 };
enum { FORWARD, BACKWARD_DATA, BACKWARD_WEIGHTS, KINDS };

static void *onednn_symbol(const char *name) {
    static void *onednn;
    if (!onednn) onednn = dlopen("libdnnl.so.3", RTLD_LAZY | RTLD_NOLOAD);
    return onednn ? dlsym(onednn, name) : NULL;
}

/* REAL(f, ret, (params)): declare real_f, oneDNN's own f. */
#define REAL(name, ret, params)                                                                     \
    static ret(*real_##name) params;                                                                \
    if (!real_##name) real_##name = (ret(*) params)onednn_symbol(#name)

/* The tensors of each direction: execute argument, how to query its memory desc, and whether it is written. */
typedef struct { int arg, query, index, written; } tensor_t;
static const tensor_t TENSORS[KINDS][4] = {
    [FORWARD] = {{ARG_SRC, QUERY_SRC_MD, 0, 0}, {ARG_WEIGHTS, QUERY_WEIGHTS_MD, 0, 0},
                 {ARG_BIAS, QUERY_WEIGHTS_MD, 1, 0}, {ARG_DST, QUERY_DST_MD, 0, 1}},
    [BACKWARD_DATA] = {{ARG_DIFF_DST, QUERY_DIFF_DST_MD, 0, 0}, {ARG_WEIGHTS, QUERY_WEIGHTS_MD, 0, 0},
                       {ARG_DIFF_SRC, QUERY_DIFF_SRC_MD, 0, 1}},
    [BACKWARD_WEIGHTS] = {{ARG_SRC, QUERY_SRC_MD, 0, 0}, {ARG_DIFF_DST, QUERY_DIFF_DST_MD, 0, 0},
                          {ARG_DIFF_WEIGHTS, QUERY_DIFF_WEIGHTS_MD, 0, 1},
                          {ARG_DIFF_BIAS, QUERY_DIFF_WEIGHTS_MD, 1, 1}},
};

/* A tensor whose blocked layout differs from MindSpore's: its reorder and its blocked memory object. */
typedef struct { int arg, written; void *reorder, *memory; size_t bytes; } staged_t;

/* One convolution primitive desc MindSpore created, and the blocked one that runs for it, if any. */
typedef struct plan {
    handle_t pd, primitive; /* MindSpore's; pd is NULL once MindSpore destroyed it */
    int kind;
    int constant;          /* created under pix2pix_constant_weights(1): weights reordered once, then kept */
    pd_t blocked_pd;       /* NULL: MindSpore's own (gemm) primitive runs */
    void *blocked;         /* the blocked primitive, made with MindSpore's primitive */
    int nstaged;
    staged_t staged[4];
    void *kept_weights;    /* a constant plan's blocked weights, NULL until its first execution */
    struct plan *next;
} plan_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* guards plans, tallies and the staging arena */
static __thread int constant_weights; /* set by the calling thread around inference with weights it never changes */
static plan_t *plans;
static char *arena; /* blocked copies during one execution (the largest convolution's) */
static size_t arena_bytes;

/* Implementations of the convolution primitives created, per direction, for the log. */
enum { NAMES = 6 };
static struct { char name[48]; int count; } tally[KINDS][NAMES];
static char report[KINDS][NAMES * 64];

static const char *impl_name(handle_t pd) {
    REAL(dnnl_primitive_desc_query, status_t, (handle_t, int, int, void *));
    const char *name = NULL;
    if (!real_dnnl_primitive_desc_query || real_dnnl_primitive_desc_query(pd, QUERY_IMPL_INFO_STR, 0, &name))
        return "?";
    return name ? name : "?";
}

static void count(int kind, const char *name) {
    for (int i = 0; i < NAMES; i++) {
        if (tally[kind][i].count == 0) snprintf(tally[kind][i].name, sizeof tally[kind][i].name, "%s", name);
        if (strcmp(tally[kind][i].name, name) == 0) {
            tally[kind][i].count++;
            return;
        }
    }
}

const char *pix2pix_conv_impls(int kind) {
    if (kind < 0 || kind >= KINDS) return "";
    pthread_mutex_lock(&lock);
    char *out = report[kind];
    size_t used = 0;
    out[0] = 0;
    for (int i = 0; i < NAMES && tally[kind][i].count; i++)
        used += snprintf(out + used, sizeof report[kind] - used, "%s%s x%d", i ? ", " : "", tally[kind][i].name,
                         tally[kind][i].count);
    pthread_mutex_unlock(&lock);
    return out;
}

static void skip_ncsp(pd_t pd) {
    REAL(dnnl_primitive_desc_next_impl, status_t, (pd_t));
    if (!real_dnnl_primitive_desc_next_impl) return;
    while (strncmp(impl_name(pd), "jit_uni_ncsp", 12) == 0)
        if (real_dnnl_primitive_desc_next_impl(pd) != 0) break; /* no other implementation: keep this one */
}

static int blocked_wanted(void) {
    static int wanted = -1;
    if (wanted < 0) {
        const char *mode = getenv("PIX2PIX_CPU_FASTPATH");
        wanted = !(mode && strcmp(mode, "gemm") == 0);
    }
    return wanted;
}

/* dims[0..3] of a 4-D memory desc (N, C, H, W); 0 if it is not 4-D. */
static int dims4(handle_t md, int64_t out[4]) {
    REAL(dnnl_memory_desc_query, status_t, (handle_t, int, void *));
    int ndims = 0;
    const int64_t *dims = NULL;
    if (!md || !real_dnnl_memory_desc_query || real_dnnl_memory_desc_query(md, QUERY_NDIMS, &ndims) ||
        ndims != 4 || real_dnnl_memory_desc_query(md, QUERY_DIMS, &dims))
        return 0;
    memcpy(out, dims, 4 * sizeof *out);
    return 1;
}

static int avx512(void) { /* oneDNN runs with AVX-512 (its ISA value has the AVX-512 bit) */
    REAL(dnnl_get_effective_cpu_isa, int, (void));
    static int on = -1;
    if (on < 0) on = real_dnnl_get_effective_cpu_isa && (real_dnnl_get_effective_cpu_isa() & 0x20) != 0;
    return on;
}

/* Worth a blocked convolution: enough output positions (any number where the weights are constant: no
 * weight reorder per call to amortise), and not a narrow backward-data output. */
static int worth_blocking(int kind, handle_t src, handle_t dst, int constant) {
    int64_t s[4], d[4];
    if (!blocked_wanted() || !dims4(src, s) || !dims4(dst, d)) return 0;
    if (kind == BACKWARD_DATA && s[1] < BLOCKED_MIN_CHANNELS) return 0;
    int64_t min = kind == BACKWARD_DATA && !avx512() ? AVX2_BACKWARD_DATA_MIN_POSITIONS : BLOCKED_MIN_POSITIONS;
    return constant || d[0] * d[2] * d[3] >= min;
}

/* Forward convolutions this thread creates while `on` take their weights as constants (see the header). */
void pix2pix_constant_weights(int on) { constant_weights = on; }

/* oneDNN's effective ISA (after any ONEDNN_MAX_CPU_ISA cap), named as that variable's values. */
const char *pix2pix_isa(void) {
    REAL(dnnl_get_effective_cpu_isa, int, (void));
    static const struct { int value; const char *name; } names[] = {
        {0x1, "SSE41"}, {0x3, "AVX"}, {0x7, "AVX2"}, {0xf, "AVX2_VNNI"}, {0x1f, "AVX2_VNNI_2"},
        {0x27, "AVX512_CORE"}, {0x67, "AVX512_CORE_VNNI"}, {0xe7, "AVX512_CORE_BF16"}};
    int isa = real_dnnl_get_effective_cpu_isa ? real_dnnl_get_effective_cpu_isa() : -1;
    const char *name = isa & 0x20 ? "AVX512_CORE_AMX_OR_NEWER" : "UNKNOWN";
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (names[i].value == isa) name = names[i].name;
    return name;
}

/* The same memory desc with its layout left to the implementation (caller destroys it). */
static void *any_layout(handle_t md) {
    REAL(dnnl_memory_desc_query, status_t, (handle_t, int, void *));
    REAL(dnnl_memory_desc_create_with_tag, status_t, (void **, int, const int64_t *, int, int));
    int64_t dims[4];
    int type = 0;
    void *out = NULL;
    if (!dims4(md, dims) || real_dnnl_memory_desc_query(md, QUERY_DATA_TYPE, &type) ||
        real_dnnl_memory_desc_create_with_tag(&out, 4, dims, type, FORMAT_TAG_ANY))
        return NULL;
    return out;
}

/* MindSpore's attributes with oneDNN managing the scratchpad (the blocked primitive's is not MindSpore's). */
static void *library_scratchpad(handle_t attr) {
    REAL(dnnl_primitive_attr_clone, status_t, (void **, handle_t));
    REAL(dnnl_primitive_attr_create, status_t, (void **));
    REAL(dnnl_primitive_attr_set_scratchpad_mode, status_t, (void *, int));
    void *out = NULL;
    if ((attr ? real_dnnl_primitive_attr_clone(&out, attr) : real_dnnl_primitive_attr_create(&out)) != 0) return NULL;
    real_dnnl_primitive_attr_set_scratchpad_mode(out, SCRATCHPAD_LIBRARY);
    return out;
}

static void destroy_all(void **md, int n, void *attr) {
    REAL(dnnl_memory_desc_destroy, status_t, (void *));
    REAL(dnnl_primitive_attr_destroy, status_t, (void *));
    for (int i = 0; i < n; i++)
        if (md[i]) real_dnnl_memory_desc_destroy(md[i]);
    if (attr) real_dnnl_primitive_attr_destroy(attr);
}

static plan_t *plan_of_pd(handle_t pd) {
    for (plan_t *p = plans; p && pd; p = p->next)
        if (p->pd == pd) return p;
    return NULL;
}

static plan_t *plan_of_primitive(handle_t primitive) {
    for (plan_t *p = plans; p && primitive; p = p->next)
        if (p->primitive == primitive) return p;
    return NULL;
}

/* Record MindSpore's new convolution pd (gemm after skip_ncsp) and the blocked pd to run for it, if any. */
static void record(pd_t pd, int kind, int constant, pd_t blocked_pd) {
    REAL(dnnl_primitive_desc_destroy, status_t, (pd_t));
    if (blocked_pd) {
        const char *name = impl_name(blocked_pd);
        if (strstr(name, "gemm") || strncmp(name, "ref", 3) == 0 || strncmp(name, "jit_uni_ncsp", 12) == 0) {
            real_dnnl_primitive_desc_destroy(blocked_pd); /* no direct kernel for it: gemm as it is */
            blocked_pd = NULL;
        }
    }
    plan_t *plan = calloc(1, sizeof *plan);
    if (!plan) {
        if (blocked_pd) real_dnnl_primitive_desc_destroy(blocked_pd);
        return;
    }
    plan->pd = pd;
    plan->kind = kind;
    plan->constant = constant;
    plan->blocked_pd = blocked_pd;
    pthread_mutex_lock(&lock);
    plan->next = plans;
    plans = plan;
    pthread_mutex_unlock(&lock);
}

static pd_t blocked_hint(handle_t hint) {
    pthread_mutex_lock(&lock);
    plan_t *p = plan_of_pd(hint);
    pd_t out = p && p->blocked_pd ? p->blocked_pd : (pd_t)hint;
    pthread_mutex_unlock(&lock);
    return out;
}

status_t dnnl_convolution_forward_primitive_desc_create(pd_t *pd, handle_t engine, int prop, int alg,
        handle_t src, handle_t weights, handle_t bias, handle_t dst, dims_t strides, dims_t dilates,
        dims_t pad_l, dims_t pad_r, handle_t attr) {
    REAL(dnnl_convolution_forward_primitive_desc_create, status_t, (pd_t *, handle_t, int, int, handle_t,
         handle_t, handle_t, handle_t, dims_t, dims_t, dims_t, dims_t, handle_t));
    if (!real_dnnl_convolution_forward_primitive_desc_create) return STATUS_RUNTIME_ERROR;
    status_t status = real_dnnl_convolution_forward_primitive_desc_create(pd, engine, prop, alg, src, weights,
            bias, dst, strides, dilates, pad_l, pad_r, attr);
    if (status != 0) return status;
    skip_ncsp(*pd);
    pd_t blocked = NULL;
    int constant = constant_weights;
    if (worth_blocking(FORWARD, src, dst, constant)) {
        void *md[3] = {any_layout(src), any_layout(weights), any_layout(dst)}, *a = library_scratchpad(attr);
        if (md[0] && md[1] && md[2] && a &&
            real_dnnl_convolution_forward_primitive_desc_create(&blocked, engine, prop, alg, md[0], md[1], bias,
                    md[2], strides, dilates, pad_l, pad_r, a) != 0)
            blocked = NULL;
        destroy_all(md, 3, a);
    }
    record(*pd, FORWARD, constant, blocked);
    return status;
}

status_t dnnl_convolution_backward_data_primitive_desc_create(pd_t *pd, handle_t engine, int alg,
        handle_t diff_src, handle_t weights, handle_t diff_dst, dims_t strides, dims_t dilates, dims_t pad_l,
        dims_t pad_r, handle_t hint, handle_t attr) {
    REAL(dnnl_convolution_backward_data_primitive_desc_create, status_t, (pd_t *, handle_t, int, handle_t,
         handle_t, handle_t, dims_t, dims_t, dims_t, dims_t, handle_t, handle_t));
    if (!real_dnnl_convolution_backward_data_primitive_desc_create) return STATUS_RUNTIME_ERROR;
    status_t status = real_dnnl_convolution_backward_data_primitive_desc_create(pd, engine, alg, diff_src,
            weights, diff_dst, strides, dilates, pad_l, pad_r, hint, attr);
    if (status != 0) return status;
    skip_ncsp(*pd);
    pd_t blocked = NULL;
    if (worth_blocking(BACKWARD_DATA, diff_src, diff_dst, 0)) {
        void *md[3] = {any_layout(diff_src), any_layout(weights), any_layout(diff_dst)}, *a = library_scratchpad(attr);
        if (md[0] && md[1] && md[2] && a &&
            real_dnnl_convolution_backward_data_primitive_desc_create(&blocked, engine, alg, md[0], md[1], md[2],
                    strides, dilates, pad_l, pad_r, blocked_hint(hint), a) != 0)
            blocked = NULL;
        destroy_all(md, 3, a);
    }
    record(*pd, BACKWARD_DATA, 0, blocked);
    return status;
}

status_t dnnl_convolution_backward_weights_primitive_desc_create(pd_t *pd, handle_t engine, int alg,
        handle_t src, handle_t diff_weights, handle_t diff_bias, handle_t diff_dst, dims_t strides,
        dims_t dilates, dims_t pad_l, dims_t pad_r, handle_t hint, handle_t attr) {
    REAL(dnnl_convolution_backward_weights_primitive_desc_create, status_t, (pd_t *, handle_t, int, handle_t,
         handle_t, handle_t, handle_t, dims_t, dims_t, dims_t, dims_t, handle_t, handle_t));
    if (!real_dnnl_convolution_backward_weights_primitive_desc_create) return STATUS_RUNTIME_ERROR;
    status_t status = real_dnnl_convolution_backward_weights_primitive_desc_create(pd, engine, alg, src,
            diff_weights, diff_bias, diff_dst, strides, dilates, pad_l, pad_r, hint, attr);
    if (status != 0) return status;
    skip_ncsp(*pd);
    pd_t blocked = NULL;
    if (worth_blocking(BACKWARD_WEIGHTS, src, diff_dst, 0)) {
        void *md[3] = {any_layout(src), any_layout(diff_weights), any_layout(diff_dst)}, *a = library_scratchpad(attr);
        if (md[0] && md[1] && md[2] && a &&
            real_dnnl_convolution_backward_weights_primitive_desc_create(&blocked, engine, alg, md[0], md[1],
                    diff_bias, md[2], strides, dilates, pad_l, pad_r, blocked_hint(hint), a) != 0)
            blocked = NULL;
        destroy_all(md, 3, a);
    }
    record(*pd, BACKWARD_WEIGHTS, 0, blocked);
    return status;
}

static void release_blocked(plan_t *p) {
    REAL(dnnl_primitive_desc_destroy, status_t, (pd_t));
    REAL(dnnl_primitive_destroy, status_t, (void *));
    REAL(dnnl_memory_destroy, status_t, (void *));
    for (int i = 0; i < p->nstaged; i++) {
        if (p->staged[i].reorder) real_dnnl_primitive_destroy(p->staged[i].reorder);
        if (p->staged[i].memory) real_dnnl_memory_destroy(p->staged[i].memory);
    }
    p->nstaged = 0;
    free(p->kept_weights);
    p->kept_weights = NULL;
    if (p->blocked) real_dnnl_primitive_destroy(p->blocked);
    p->blocked = NULL;
    if (p->blocked_pd) real_dnnl_primitive_desc_destroy(p->blocked_pd);
    p->blocked_pd = NULL;
}

/* The blocked primitive and, for each tensor whose layout differs, a reorder and a memory object. */
static int make_blocked(plan_t *p) {
    REAL(dnnl_primitive_create, status_t, (void **, handle_t));
    REAL(dnnl_primitive_desc_query, status_t, (handle_t, int, int, void *));
    REAL(dnnl_primitive_desc_query_md, handle_t, (handle_t, int, int));
    REAL(dnnl_primitive_desc_destroy, status_t, (pd_t));
    REAL(dnnl_memory_desc_equal, int, (handle_t, handle_t));
    REAL(dnnl_memory_desc_get_size, size_t, (handle_t));
    REAL(dnnl_memory_create, status_t, (void **, handle_t, void *, void *));
    REAL(dnnl_reorder_primitive_desc_create, status_t, (pd_t *, handle_t, void *, handle_t, void *, handle_t));
    void *engine = NULL;
    if (real_dnnl_primitive_desc_query(p->pd, QUERY_ENGINE, 0, &engine) ||
        real_dnnl_primitive_create(&p->blocked, p->blocked_pd))
        return 0;
    for (int i = 0; i < 4 && TENSORS[p->kind][i].arg; i++) {
        const tensor_t *t = &TENSORS[p->kind][i];
        handle_t plain = real_dnnl_primitive_desc_query_md(p->pd, t->query, t->index);
        handle_t blocked = real_dnnl_primitive_desc_query_md(p->blocked_pd, t->query, t->index);
        if (!plain || !blocked || real_dnnl_memory_desc_get_size(plain) == 0 ||
            real_dnnl_memory_desc_equal(plain, blocked))
            continue; /* absent (no bias) or the same layout: MindSpore's own memory serves */
        staged_t *s = &p->staged[p->nstaged++];
        s->arg = t->arg;
        s->written = t->written;
        s->bytes = (real_dnnl_memory_desc_get_size(blocked) + 63) & ~(size_t)63;
        pd_t reorder_pd = NULL;
        int ok = real_dnnl_reorder_primitive_desc_create(&reorder_pd, t->written ? blocked : plain, engine,
                         t->written ? plain : blocked, engine, NULL) == 0 &&
                 real_dnnl_primitive_create(&s->reorder, reorder_pd) == 0 &&
                 real_dnnl_memory_create(&s->memory, blocked, engine, NULL) == 0;
        if (reorder_pd) real_dnnl_primitive_desc_destroy(reorder_pd);
        if (!ok) return 0;
    }
    return 1;
}

status_t dnnl_primitive_create(void **primitive, handle_t pd) {
    REAL(dnnl_primitive_create, status_t, (void **, handle_t));
    if (!real_dnnl_primitive_create) return STATUS_RUNTIME_ERROR;
    status_t status = real_dnnl_primitive_create(primitive, pd);
    if (status != 0) return status;
    pthread_mutex_lock(&lock);
    plan_t *p = plan_of_pd(pd);
    if (p && !p->primitive) { /* a second primitive of one pd runs MindSpore's own */
        p->primitive = *primitive;
        if (p->blocked_pd && !make_blocked(p)) release_blocked(p);
        count(p->kind, impl_name(p->blocked_pd ? p->blocked_pd : pd));
    }
    pthread_mutex_unlock(&lock);
    return status;
}

static void forget(plan_t *gone) {
    for (plan_t **p = &plans; *p; p = &(*p)->next)
        if (*p == gone) {
            *p = gone->next;
            release_blocked(gone);
            free(gone);
            return;
        }
}

status_t dnnl_primitive_desc_destroy(pd_t pd) {
    REAL(dnnl_primitive_desc_destroy, status_t, (pd_t));
    pthread_mutex_lock(&lock);
    plan_t *p = plan_of_pd(pd);
    if (p && !p->primitive) forget(p); /* never run */
    else if (p) p->pd = NULL;          /* its primitive lives on */
    pthread_mutex_unlock(&lock);
    return real_dnnl_primitive_desc_destroy ? real_dnnl_primitive_desc_destroy(pd) : STATUS_RUNTIME_ERROR;
}

status_t dnnl_primitive_destroy(void *primitive) {
    REAL(dnnl_primitive_destroy, status_t, (void *));
    pthread_mutex_lock(&lock);
    plan_t *p = plan_of_primitive(primitive);
    if (p) forget(p);
    pthread_mutex_unlock(&lock);
    return real_dnnl_primitive_destroy ? real_dnnl_primitive_destroy(primitive) : STATUS_RUNTIME_ERROR;
}

static int kept(const plan_t *p, const staged_t *s) { return p->constant && s->arg == ARG_WEIGHTS; }

/* Run the blocked primitive: reorder the inputs in, run, reorder the outputs out (lock held). A constant
 * plan's weights are reordered at its first execution only, into memory of its own. */
static status_t run_blocked(plan_t *p, void *stream, int nargs, const exec_arg_t *args) {
    REAL(dnnl_primitive_execute, status_t, (handle_t, void *, int, const exec_arg_t *));
    REAL(dnnl_memory_set_data_handle, status_t, (void *, void *));
    size_t need = 0;
    int first = 0; /* a constant plan's first execution: its weights are reordered now */
    for (int i = 0; i < p->nstaged; i++) {
        if (!kept(p, &p->staged[i])) need += p->staged[i].bytes;
        else if (!p->kept_weights) {
            if (!(p->kept_weights = aligned_alloc(64, p->staged[i].bytes))) return STATUS_RUNTIME_ERROR;
            first = 1;
        }
    }
    if (need > arena_bytes) {
        free(arena);
        arena = aligned_alloc(64, need);
        arena_bytes = arena ? need : 0;
        if (!arena) return STATUS_RUNTIME_ERROR;
    }
    exec_arg_t blocked_args[8];
    int n = 0;
    status_t status = 0;
    size_t offset = 0;
    for (int i = 0; i < p->nstaged && status == 0; i++) {
        staged_t *s = &p->staged[i];
        status = real_dnnl_memory_set_data_handle(s->memory, kept(p, s) ? p->kept_weights : arena + offset);
        if (!kept(p, s)) offset += s->bytes;
    }
    for (int a = 0; a < nargs && n < 8 && status == 0; a++) {
        if (args[a].arg == ARG_SCRATCHPAD) continue; /* MindSpore's is sized for its own primitive */
        exec_arg_t arg = args[a];
        for (int i = 0; i < p->nstaged; i++) {
            staged_t *s = &p->staged[i];
            if (s->arg != arg.arg) continue;
            if (!s->written && (first || !kept(p, s))) {
                exec_arg_t in[2] = {{ARG_SRC, arg.memory}, {ARG_DST, s->memory}};
                status = real_dnnl_primitive_execute(s->reorder, stream, 2, in);
            }
            arg.memory = s->memory;
        }
        blocked_args[n++] = arg;
    }
    if (status == 0) status = real_dnnl_primitive_execute(p->blocked, stream, n, blocked_args);
    for (int a = 0; a < nargs && status == 0; a++)
        for (int i = 0; i < p->nstaged && status == 0; i++) {
            staged_t *s = &p->staged[i];
            if (s->arg != args[a].arg || !s->written) continue;
            exec_arg_t out[2] = {{ARG_SRC, s->memory}, {ARG_DST, args[a].memory}};
            status = real_dnnl_primitive_execute(s->reorder, stream, 2, out);
        }
    if (status != 0 && first) { /* reorder them again next time */
        free(p->kept_weights);
        p->kept_weights = NULL;
    }
    return status;
}

status_t dnnl_primitive_execute(handle_t primitive, void *stream, int nargs, const exec_arg_t *args) {
    REAL(dnnl_primitive_execute, status_t, (handle_t, void *, int, const exec_arg_t *));
    if (!real_dnnl_primitive_execute) return STATUS_RUNTIME_ERROR;
    pthread_mutex_lock(&lock);
    plan_t *p = plan_of_primitive(primitive);
    if (!p || !p->blocked) {
        pthread_mutex_unlock(&lock);
        return real_dnnl_primitive_execute(primitive, stream, nargs, args);
    }
    status_t status = run_blocked(p, stream, nargs, args);
    pthread_mutex_unlock(&lock);
    return status;
}
