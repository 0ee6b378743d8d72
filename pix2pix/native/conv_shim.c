/* conv_shim.c: steer MindSpore 2.10's bundled oneDNN (libdnnl.so.3) away from its slow convolution path
 * on AVX-512 CPUs.
 *
 * MindSpore gives oneDNN plain NCHW data and plain OIHW weights. On AVX-512, oneDNN's first candidate for
 * those, "jit_uni_ncsp", keeps the plain weights that its fast kernels refuse and ends in a reference
 * kernel of about 1 GFLOP/s (forward and backward-data). The next candidate, "x64:gemm:jit", runs the
 * convolution as im2col + AVX-512 sgemm. This library defines the three C-API functions that create
 * convolution primitive descriptors; each calls oneDNN's own and, while the chosen implementation is a
 * skipped one, moves on to the next (dnnl_primitive_desc_next_impl). Same math, another kernel.
 *
 * Loaded before MindSpore (pix2pix/fastpath.py: RTLD_GLOBAL, so MindSpore's calls resolve here first);
 * oneDNN itself is found with dlopen(RTLD_NOLOAD) once MindSpore has loaded it.
 * pix2pix_conv_impl(kind) reports the implementation chosen last (0 forward, 1 backward-data,
 * 2 backward-weights), so the framework can log what runs.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef int status_t;        /* dnnl_status_t: 0 is dnnl_success */
typedef void *pd_t;          /* dnnl_primitive_desc_t */
typedef const void *handle_t; /* memory descs, engine, attributes, hint: passed through untouched */
typedef const int64_t *dims_t;

enum { STATUS_RUNTIME_ERROR = 5, QUERY_IMPL_INFO_STR = 8 };
enum { FORWARD, BACKWARD_DATA, BACKWARD_WEIGHTS, KINDS };

static const char *const SKIPPED = "jit_uni_ncsp";
static char chosen[KINDS][96];
static int skips;

static void *onednn_symbol(const char *name) {
    static void *onednn;
    if (!onednn) onednn = dlopen("libdnnl.so.3", RTLD_LAZY | RTLD_NOLOAD);
    return onednn ? dlsym(onednn, name) : NULL;
}

static void choose(pd_t pd, int kind) {
    static status_t (*query)(handle_t, int, int, void *);
    static status_t (*next_impl)(pd_t);
    if (!query) query = (status_t (*)(handle_t, int, int, void *))onednn_symbol("dnnl_primitive_desc_query");
    if (!next_impl) next_impl = (status_t (*)(pd_t))onednn_symbol("dnnl_primitive_desc_next_impl");
    if (!query || !next_impl) return;
    const char *name = NULL;
    while (query(pd, QUERY_IMPL_INFO_STR, 0, &name) == 0 && name && strncmp(name, SKIPPED, strlen(SKIPPED)) == 0) {
        if (next_impl(pd) != 0) break; /* no other implementation: keep this one */
        skips++;
    }
    snprintf(chosen[kind], sizeof chosen[kind], "%s", name ? name : "?");
}

const char *pix2pix_conv_impl(int kind) { return kind >= 0 && kind < KINDS ? chosen[kind] : ""; }
int pix2pix_conv_skips(void) { return skips; }

status_t dnnl_convolution_forward_primitive_desc_create(pd_t *pd, handle_t engine, int prop, int alg,
        handle_t src, handle_t weights, handle_t bias, handle_t dst, dims_t strides, dims_t dilates,
        dims_t pad_l, dims_t pad_r, handle_t attr) {
    typedef status_t (*fn_t)(pd_t *, handle_t, int, int, handle_t, handle_t, handle_t, handle_t, dims_t,
                             dims_t, dims_t, dims_t, handle_t);
    fn_t real = (fn_t)onednn_symbol("dnnl_convolution_forward_primitive_desc_create");
    if (!real) return STATUS_RUNTIME_ERROR;
    status_t status = real(pd, engine, prop, alg, src, weights, bias, dst, strides, dilates, pad_l, pad_r, attr);
    if (status == 0) choose(*pd, FORWARD);
    return status;
}

status_t dnnl_convolution_backward_data_primitive_desc_create(pd_t *pd, handle_t engine, int alg,
        handle_t diff_src, handle_t weights, handle_t diff_dst, dims_t strides, dims_t dilates, dims_t pad_l,
        dims_t pad_r, handle_t hint, handle_t attr) {
    typedef status_t (*fn_t)(pd_t *, handle_t, int, handle_t, handle_t, handle_t, dims_t, dims_t, dims_t,
                             dims_t, handle_t, handle_t);
    fn_t real = (fn_t)onednn_symbol("dnnl_convolution_backward_data_primitive_desc_create");
    if (!real) return STATUS_RUNTIME_ERROR;
    status_t status = real(pd, engine, alg, diff_src, weights, diff_dst, strides, dilates, pad_l, pad_r, hint, attr);
    if (status == 0) choose(*pd, BACKWARD_DATA);
    return status;
}

status_t dnnl_convolution_backward_weights_primitive_desc_create(pd_t *pd, handle_t engine, int alg,
        handle_t src, handle_t diff_weights, handle_t diff_bias, handle_t diff_dst, dims_t strides,
        dims_t dilates, dims_t pad_l, dims_t pad_r, handle_t hint, handle_t attr) {
    typedef status_t (*fn_t)(pd_t *, handle_t, int, handle_t, handle_t, handle_t, handle_t, dims_t, dims_t,
                             dims_t, dims_t, handle_t, handle_t);
    fn_t real = (fn_t)onednn_symbol("dnnl_convolution_backward_weights_primitive_desc_create");
    if (!real) return STATUS_RUNTIME_ERROR;
    status_t status = real(pd, engine, alg, src, diff_weights, diff_bias, diff_dst, strides, dilates, pad_l,
                           pad_r, hint, attr);
    if (status == 0) choose(*pd, BACKWARD_WEIGHTS);
    return status;
}
