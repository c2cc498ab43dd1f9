/* Strategy CC_CONV_BATCHED: the columns of a chunk of nb images side by side,
 * (C*KH*KW, nb*L): row r, image n, position l at r*nb*L + n*L + l, so small
 * images still make long GEMMs.  A second buffer T (K, nb*L) holds the GEMM
 * output (forward) or dy transposed (backward).  The GEMMs are cut into tiles
 * of fixed size, each a sequential BLAS call inside the OpenMP team; no tile
 * splits the reduction dimension.  Workspace per image: (C*KH*KW + K) * L. */

#ifndef CC_BATCHED_SHAPE
#define CC_BATCHED_SHAPE
static int batched_applies(const cc_conv_geom *g) { (void)g; return 1; }
/* AUTO's default: measured on the fixed layer set of bench_conv.py (2 threads),
 * side-by-side columns were as fast as per-image tiles or faster on every
 * layer of more than one tap, forward and backward (per-image tiles lost
 * most on first layers: 0.6-0.8x); 1x1 layers are TILES' (tiles_pick). */
static int batched_pick(const cc_conv_geom *g, int elem_size, int backward)
{
    return !tiles_pick(g, elem_size, backward);   /* (1x1 layers: see there) */
}

int cc_conv_product_ok(const cc_conv_geom *g)
{
    /* the product kernel (direct_impl.h) on im2col columns: measured faster
     * than BLAS, whose packing of the columns costs as much as the
     * multiplications when the weights are few */
    return g->groups == 1 && g->K * g->C * g->KH * g->KW <= CC_PW_MAX_WEIGHTS && g->K <= CC_PW_MAX_K &&
           cc_product_kernel();
}

/* Images a chunk: as many as the workspace holds, but no more columns than
 * CC_BATCHED_CHUNK_ELEMS (at least one image).  Built and then multiplied,
 * a chunk's columns that outgrow the cache go to memory and back: LeNet-5's
 * first layer at batch 1,000 (78 KB of columns an image, float32) ran its
 * inference 34 ms with all images at once, 25 ms in chunks of 8 MiB (2
 * threads, AVX2 without AVX-512, where the layer runs here). */
#define CC_BATCHED_CHUNK_ELEMS ((int64_t)1 << 21)
static int64_t batched_cap(const cc_conv_geom *g, int64_t per)
{
    (void)g;
    return CC_MAX(1, CC_BATCHED_CHUNK_ELEMS / per);
}

static int64_t batched_workspace(const cc_conv_geom *g, int64_t chunk)
{
    int64_t t;
    /* per image: columns and T; fixed: dW partials of a split reduction */
    /* (at least the direct path's blocked kernel copy, which a request
     * for it, or AUTO, may take instead: 16 channels per block) */
    const int64_t fixed = CC_DW_SPLIT_MAX * ((g->K + 15) / 16 * 16) * (g->C / g->groups) * g->KH * g->KW;
    /* (per image at least 16-channel blocks of dy, for the direct dW) */
    const int64_t rows = CC_MAX(g->C * g->KH * g->KW + g->K, (g->K + 15) / 16 * 16);
    if (!cc_prod4_ok(chunk, rows, g->OH, g->OW, &t)) return -1;
    /* the whole chunk's columns are one BLAS operand: 32-bit sizes */
    if (chunk * g->OH * g->OW > INT_MAX) return -1;
    return t + fixed;
}

/* The workspace of a strategy that may fall back to BATCHED (on the data,
 * after the plan is made): room for either run, the larger fixed part plus
 * the larger per-image part (both affine in chunk); -1 on overflow. */
static int64_t batched_or(const cc_conv_geom *g, int64_t chunk,
                          int64_t (*need)(const cc_conv_geom *, int64_t))
{
    const int64_t b0 = batched_workspace(g, 0), b1 = batched_workspace(g, 1);
    const int64_t s0 = need(g, 0), s1 = need(g, 1);
    int64_t fixed, per, t;
    if (b0 < 0 || b1 < 0 || s0 < 0 || s1 < 0) return -1;
    if (batched_workspace(g, chunk) < 0 || need(g, chunk) < 0) return -1;
    fixed = CC_MAX(b0, s0);
    per = CC_MAX(b1 - b0, s1 - s0);
    if (!cc_mul_ok(chunk, per, &t) || t > CC_SIZE_MAX - fixed) return -1;
    return t + fixed;
}
#endif

/* A pointwise layer (1x1, stride 1, no padding, one group) of more weights
 * than the product kernel takes and maps of CC_PW_GEMM_MIN_L positions or
 * more, through BLAS with no copies: each image's
 * x is already its columns (C x L) and its y the product's output, so the
 * products read x and dy and write y, dx and dW where they lie -- no
 * im2col, no T, no col2im (measured 8-14 % of such a layer's time at batch
 * 8).  Tiles (image, positions block, channels block) are fixed by the
 * shape; dW's tiles (input by output channel blocks) each sum the images
 * in order. */
static int FN(pointwise_gemm_ok)(const cc_conv_geom *g)
{
    return g->groups == 1 && cc_conv_is_pointwise(g) && g->K * g->C > CC_PW_MAX_WEIGHTS &&
           g->OH * g->OW >= CC_PW_GEMM_MIN_L;
}

static void FN(fwd_pointwise)(const REAL *x, const REAL *w, const REAL *b, const cc_conv_geom *g,
                              int n_threads, GEMM_T gemm, REAL *y)
{
    const int64_t C = g->C, K = g->K, L = g->OH * g->OW;
    int64_t nlb = cc_nblocks(L, CC_LSPLIT, CC_LBLOCK), lbs = cc_blocksize(L, CC_LSPLIT, CC_LBLOCK);
    int64_t nkb = cc_nblocks(K, CC_KBLOCK, CC_KBLOCK), kbs = cc_blocksize(K, CC_KBLOCK, CC_KBLOCK);
    int64_t i;
    cc_min_tiles(g->N, L, &nlb, &lbs, K, &nkb, &kbs);
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1) schedule(dynamic, 1)
    for (i = 0; i < g->N * nlb * nkb; ++i) {
        const int64_t kb = i % nkb, lb = (i / nkb) % nlb, n = i / (nkb * nlb);
        const int64_t k0 = kb * kbs, l0 = lb * lbs;
        const int m = (int)CC_MIN(lbs, L - l0), nn = (int)CC_MIN(kbs, K - k0);
        const int kk = (int)C, lda = (int)L, ldb = (int)C, ldc = (int)L;
        const REAL one = 1, zero = 0;
        REAL *out = y + (n * K + k0) * L + l0;
        gemm("N", "N", &m, &nn, &kk, &one, x + n * C * L + l0, &lda, w + k0 * C, &ldb, &zero, out,
             &ldc);
        if (b) {   /* (the tile's rows while they are in cache) */
            int64_t k, l;
            for (k = 0; k < nn; ++k)
                for (l = 0; l < m; ++l) out[k * L + l] += b[k0 + k];
        }
    }
}

static void FN(bwd_pointwise)(const REAL *dy, const REAL *x, const REAL *w, const cc_conv_geom *g,
                              int n_threads, GEMM_T gemm, REAL *dx, REAL *dw)
{
    const int64_t C = g->C, K = g->K, L = g->OH * g->OW, N = g->N;
    /* dX: (image, positions, input channels) tiles of dx = Wᵀ dy */
    int64_t nlb = cc_nblocks(L, CC_LSPLIT, CC_LBLOCK), lbs = cc_blocksize(L, CC_LSPLIT, CC_LBLOCK);
    int64_t ncb = cc_nblocks(C, CC_CBLOCK, CC_CBLOCK), cbs = cc_blocksize(C, CC_CBLOCK, CC_CBLOCK);
    /* dW: (input, output channels) tiles of dW = sum over images of dy xᵀ */
    const int64_t nkb = cc_nblocks(K, CC_KBLOCK, CC_KBLOCK), kbs = cc_blocksize(K, CC_KBLOCK, CC_KBLOCK);
    const int64_t wcbs = cc_split_block(C, nkb, CC_CBLOCK), nwcb = (C + wcbs - 1) / wcbs;
    const int64_t ndw = dw ? nkb * nwcb : 0;
    int64_t i, ndx;
    cc_min_tiles(N, L, &nlb, &lbs, C, &ncb, &cbs);
    ndx = dx ? N * nlb * ncb : 0;
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
    {
#pragma omp for schedule(dynamic, 1) nowait
        for (i = 0; i < ndw; ++i) {
            const int64_t cb = i % nwcb, kb = i / nwcb, c0 = cb * wcbs, k0 = kb * kbs;
            const int m = (int)CC_MIN(wcbs, C - c0), nn = (int)CC_MIN(kbs, K - k0);
            int64_t n;
            for (n = 0; n < N; ++n)
                FN(gemm_tn)(gemm, m, nn, (int)L, x + (n * C + c0) * L, (int)L,
                            dy + (n * K + k0) * L, (int)L, n > 0, dw + k0 * C + c0, (int)C);
        }
#pragma omp for schedule(dynamic, 1)
        for (i = 0; i < ndx; ++i) {
            const int64_t cb = i % ncb, lb = (i / ncb) % nlb, n = i / (ncb * nlb);
            const int64_t c0 = cb * cbs, l0 = lb * lbs;
            const int m = (int)CC_MIN(lbs, L - l0), nn = (int)CC_MIN(cbs, C - c0);
            const int kk = (int)K, lda = (int)L, ldb = (int)C, ldc = (int)L;
            const REAL one = 1, zero = 0;
            gemm("N", "T", &m, &nn, &kk, &one, dy + n * K * L + l0, &lda, w + c0, &ldb, &zero,
                 dx + (n * C + c0) * L + l0, &ldc);
        }
    }
}

#ifndef CC_DWS_SHAPE
#define CC_DWS_SHAPE
/* Positions a block of the streamed dW below: its columns (C*KH*KW x this)
 * stay in a core's L2 between im2col and the product. */
#define CC_DWS_BLOCK 512

/* Whether dW streams (FN(dw_streamed)): few weights (a first layer's: 3 ->
 * 64 7x7 is 9,408) and a long reduction, where the side-by-side columns of
 * a chunk are megabytes written once and read once from memory -- ResNet's
 * and GoogLeNet's 7x7/2 stem on 224x224 inputs spent twice its forward
 * pass's time on its weight gradient alone. */
static int cc_dw_stream_ok(const cc_conv_geom *g)
{
    /* (the layers whose whole batch's reduction the side-by-side columns
     * would cut into segments: cc_dw_splits) */
    return g->groups == 1 && cc_dw_splits(g, g->N * g->OH * g->OW) > 1;
}
#endif

static int FN(fwd_batched)(const REAL *x, const REAL *w, const REAL *b,
                           const cc_conv_geom *g, REAL *work, int64_t B,
                           int n_threads, GEMM_T gemm, REAL *y)
{
    const int64_t G = g->groups, Cg = g->C / G, Kg = g->K / G;
    const int64_t CKK = g->C * g->KH * g->KW, CKKg = Cg * g->KH * g->KW;
    const int64_t L = g->OH * g->OW, HW = g->H * g->W;
    int64_t n0;
    if (FN(pointwise_gemm_ok)(g)) {
        FN(fwd_pointwise)(x, w, b, g, n_threads, gemm, y);
        return CC_OK;
    }
    if (G == 1 && cc_conv_product_ok(g)) {
        /* few weights: the product kernel, no BLAS packing; it builds each
         * block of columns itself, from x, and writes y, so it needs no
         * workspace and takes the whole batch */
        REAL *Mt = FN(pw_packed)(w, g->K, CKK, CKK, 1);
        if (Mt) {   /* (else through BLAS below) */
            const int st = FN(pw_images)(Mt, g->K, CKK, x, g->N, L, b, n_threads, y, g);
            free(Mt);
            return st;
        }
    }
    for (n0 = 0; n0 < g->N; n0 += B) {
        const int64_t nb = CC_MIN(B, g->N - n0), nbL = nb * L;
        int64_t nmb = cc_nblocks(nbL, CC_LSPLIT, CC_LBLOCK), mbs = cc_blocksize(nbL, CC_LSPLIT, CC_LBLOCK);
        int64_t nkb = cc_nblocks(Kg, CC_KBLOCK, CC_KBLOCK), kbs = cc_blocksize(Kg, CC_KBLOCK, CC_KBLOCK);
        int64_t ntiles;
        REAL *cols = work, *T = work + CKK * nbL;
        int64_t i;
        /* (a batch-1 layer whose positions and channels each fit one tile
         * would multiply on one thread) */
        cc_min_tiles(G, nbL, &nmb, &mbs, Kg, &nkb, &kbs);
        ntiles = G * nmb * nkb;
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
        {
#pragma omp for schedule(static)
            for (i = 0; i < FN(im2col_ntasks)(g, nb); ++i)
                FN(im2col_task)(x + n0 * g->C * HW, g, i, nb, nbL, L, cols);
#pragma omp for schedule(dynamic, 1)
            for (i = 0; i < ntiles; ++i) {
                const int64_t kb = i % nkb, mb = (i / nkb) % nmb, gi = i / (nkb * nmb);
                const int64_t m0 = mb * mbs, k0 = gi * Kg + kb * kbs;
                const int m = (int)CC_MIN(mbs, nbL - m0), nn = (int)CC_MIN(kbs, Kg - kb * kbs);
                const int kk = (int)CKKg, lda = (int)nbL, ldb = (int)CKKg, ldc = (int)nbL;
                const REAL one = 1, zero = 0;
                gemm("N", "N", &m, &nn, &kk, &one, cols + gi * CKKg * nbL + m0, &lda,
                     w + k0 * CKKg, &ldb, &zero, T + k0 * nbL + m0, &ldc);
            }
#pragma omp for schedule(static)
            for (i = 0; i < nb * g->K; ++i) {
                const int64_t n = i / g->K, k = i % g->K;
                const REAL *src = T + k * nbL + n * L;
                REAL *dst = y + ((n0 + n) * g->K + k) * L;
                const REAL bk = b ? b[k] : 0;
                int64_t l;
                for (l = 0; l < L; ++l) dst[l] = src[l] + bk;
            }
        }
    }
    return CC_OK;
}

/* Column elements a thin dX task keeps (256 KiB of float32: in a core's L2
 * between the product and col2im). */
#define CC_DXT_COL_ELEMS 65536

/* dX of a thin layer (groups 1, K <= CC_PW_DX_MAX_K) with its columns kept in
 * cache.  Each task is a group of gs images: its thread copies their dy into
 * T (K x ldp, ldp = gs*L rounded up to whole product blocks, zero past gs*L),
 * forms dcols = Wᵀ.T (CKK x gs*L) with the product kernel, then col2im's the
 * group's planes from it.  The sums and their order are the batched path's.
 * `work` holds per-thread buffers of `per` elements.  Returns 0 if `avail`
 * elements hold none (the caller takes the batched path). */
static int FN(dx_thin)(const REAL *dy, const REAL *Wt, const cc_conv_geom *g, REAL *work,
                       int64_t avail, int n_threads, REAL *dx)
{
    const int64_t K = g->K, CKK = g->C * g->KH * g->KW, L = g->OH * g->OW, HW = g->H * g->W;
    const int64_t pb = FN(pw_block_positions)();
    /* readable values past the columns: col2im's last pieces read whole
     * vectors (masked) */
    const int64_t tail = g->PW + g->W + pb;
    /* (and at least two tasks a thread where there are images for them) */
    int64_t gs = CC_MAX(1, CC_MIN(CC_DXT_COL_ELEMS / CC_MAX(1, CKK * L), g->N / (2 * n_threads)));
    int64_t ldp, per, ntask, nt, t;
    for (;;) {
        ldp = (gs * L + pb - 1) / pb * pb;
        per = CKK * gs * L + tail + K * ldp + pb;
        if (per <= avail || gs == 1) break;
        gs = (gs + 1) / 2;
    }
    nt = CC_MIN((int64_t)n_threads, avail / per);
    if (nt < 1) return 0;
    ntask = (g->N + gs - 1) / gs;
#pragma omp parallel num_threads((int)nt) if (nt > 1 && ntask > 1)
    {
        REAL *cols = work + CC_THREAD_NUM() * per, *T = cols + CKK * gs * L + tail;
        REAL *scratch = T + K * ldp;
#pragma omp for schedule(static)
        for (t = 0; t < ntask; ++t) {
            const int64_t n0 = t * gs, nb = CC_MIN(gs, g->N - n0), nbL = nb * L;
            int64_t k, n, q, c;
            for (k = 0; k < K; ++k) {
                REAL *dst = T + k * ldp;
                for (n = 0; n < nb; ++n)
                    memcpy(dst + n * L, dy + ((n0 + n) * K + k) * L, (size_t)L * sizeof(REAL));
                for (q = nbL; q < ldp; ++q) dst[q] = 0;
            }
            for (q = 0; q < nbL; q += pb)
                FN(pw_positions)(Wt, CKK, K, T + q, ldp, CC_MIN(pb, nbL - q), cols + q, nbL, scratch);
            for (n = 0; n < nb; ++n)
                for (c = 0; c < g->C; c += 2)
                    FN(col2im_planes)(cols + n * L, g, c, CC_MIN(2, g->C - c), nbL,
                                      dx + ((n0 + n) * g->C + c) * HW, cols, cols + CKK * nbL + tail);
        }
    }
    return 1;
}


/* dW of such a layer, streamed: the N*L positions, in blocks of
 * CC_DWS_BLOCK within each image, are cut into CC_DW_SPLIT_MAX segments at
 * fixed blocks; a thread takes a segment at a time and, block by block,
 * builds the block's columns in its own buffer and adds their product with
 * dy (read where it lies) into the segment's partial dW; the partials are
 * then summed in segment order.  The order of every sum depends on the
 * shape alone.  `work` holds the partials and a buffer a thread; returns 0
 * (nothing done) if `avail` elements hold no thread's buffer. */
static int FN(dw_streamed)(const REAL *dy, const REAL *x, const cc_conv_geom *g, REAL *work,
                           int64_t avail, int n_threads, GEMM_T gemm, REAL *dw)
{
    const int64_t K = g->K, CKK = g->C * g->KH * g->KW, L = g->OH * g->OW;
    const int64_t HW = g->H * g->W, nlb = (L + CC_DWS_BLOCK - 1) / CC_DWS_BLOCK;
    const int64_t nblocks = g->N * nlb, S = CC_DW_SPLIT_MAX, per = CKK * CC_DWS_BLOCK;
    REAL *partial = work;
    int64_t nt, sp, i;
    nt = CC_MIN((int64_t)n_threads, (avail - S * K * CKK) / per);
    if (nt < 1) return 0;
#pragma omp parallel num_threads((int)nt) if (nt > 1)
    {
        REAL *cols = work + S * K * CKK + CC_THREAD_NUM() * per;
#pragma omp for schedule(dynamic, 1)
        for (sp = 0; sp < S; ++sp) {
            const int64_t j0 = sp * nblocks / S, j1 = (sp + 1) * nblocks / S;
            REAL *c = partial + sp * K * CKK;
            int64_t j;
            if (j1 <= j0) {
                for (j = 0; j < K * CKK; ++j) c[j] = 0;
                continue;
            }
            for (j = j0; j < j1; ++j) {
                const int64_t n = j / nlb, l0 = (j % nlb) * CC_DWS_BLOCK;
                const int64_t len = CC_MIN(CC_DWS_BLOCK, L - l0);
                FN(im2col_span)(x + n * g->C * HW, g, 0, CKK, l0, l0 + len, len, cols);
                /* dWᵀ (CKK x K) (+)= cols (CKK x len) . dy_nᵀ (len x K) */
                FN(gemm_tn)(gemm, (int)CKK, (int)K, (int)len, cols, (int)len,
                            dy + n * K * L + l0, (int)L, j != j0, c, (int)CKK);
            }
        }
#pragma omp for schedule(static)
        for (i = 0; i < K * CKK; ++i) {
            REAL v = 0;
            int64_t q;
            for (q = 0; q < S; ++q) v += partial[q * K * CKK + i];
            dw[i] = v;
        }
    }
    return 1;
}

static int FN(bwd_batched)(const REAL *dy, const REAL *x, const REAL *w,
                           const cc_conv_geom *g, REAL *work, int64_t B,
                           int n_threads, GEMM_T gemm, REAL *dx, REAL *dw)
{
    const int64_t G = g->groups, Cg = g->C / G, Kg = g->K / G;
    const int64_t CKK = g->C * g->KH * g->KW, CKKg = Cg * g->KH * g->KW;
    const int64_t L = g->OH * g->OW, HW = g->H * g->W;
    const int64_t nkb = cc_nblocks(Kg, CC_KBLOCK, CC_KBLOCK), kbs = cc_blocksize(Kg, CC_KBLOCK, CC_KBLOCK);
    const int64_t wcbs = cc_split_block(CKKg, G * nkb, CC_CBLOCK), nwcb = (CKKg + wcbs - 1) / wcbs;
    /* a thin dX product (few output channels to reduce over): the product
     * kernel, no BLAS packing or output clearing */
    REAL *Wt = dx && G == 1 && g->K <= CC_PW_DX_MAX_K && g->K * CKK <= CC_PW_MAX_WEIGHTS &&
                       cc_product_kernel()
                   ? FN(pw_packed)(w, CKK, g->K, 1, CKK) : NULL;
    int64_t n0;
    (void)n_threads;
    if (FN(pointwise_gemm_ok)(g)) {   /* (Wt is NULL: too many weights) */
        FN(bwd_pointwise)(dy, x, w, g, n_threads, gemm, dx, dw);
        return CC_OK;
    }
    /* a first layer's dW streamed, block by block (then dX, if asked,
     * below) */
    if (dw && cc_dw_stream_ok(g) &&
        FN(dw_streamed)(dy, x, g, work, batched_workspace(g, B), n_threads, gemm, dw)) {
        dw = NULL;
        if (!dx) {
            free(Wt);
            return CC_OK;
        }
    }
    /* the thin dX with its columns in cache where the workspace has room
     * for a thread's buffers, else below, chunk by chunk */
    if (Wt && FN(dx_thin)(dy, Wt, g, work, batched_workspace(g, B),
                          n_threads, dx)) {
        free(Wt);
        Wt = NULL;
        dx = NULL;
        if (!dw) return CC_OK;
    }
    for (n0 = 0; n0 < g->N; n0 += B) {
        const int64_t nb = CC_MIN(B, g->N - n0), nbL = nb * L;
        int64_t nmb = cc_nblocks(nbL, CC_LSPLIT, CC_LBLOCK), mbs = cc_blocksize(nbL, CC_LSPLIT, CC_LBLOCK);
        int64_t ncb = cc_nblocks(CKKg, CC_CBLOCK, CC_CBLOCK), cbs = cc_blocksize(CKKg, CC_CBLOCK, CC_CBLOCK);
        REAL *cols = work, *T = work + CKK * nbL, *partial = T + g->K * nbL;
        const int64_t nsplit = cc_dw_splits(g, nbL);
        int64_t i;
        /* (dX of a 1x1 layer of up to 256 input channels on 14x14 maps at
         * batch 8 was one tile: one thread did the whole product) */
        cc_min_tiles(G, nbL, &nmb, &mbs, CKKg, &ncb, &cbs);
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
        {
#pragma omp for schedule(static) nowait
            for (i = 0; i < nb * g->K; ++i) {
                const int64_t n = i / g->K, k = i % g->K;
                const REAL *src = dy + ((n0 + n) * g->K + k) * L;
                REAL *dst = T + k * nbL + n * L;
                int64_t l;
                for (l = 0; l < L; ++l) dst[l] = src[l];
            }
            if (dw) {
#pragma omp for schedule(static)
                for (i = 0; i < FN(im2col_ntasks)(g, nb); ++i)
                    FN(im2col_task)(x + n0 * g->C * HW, g, i, nb, nbL, L, cols);
                /* dW_gᵀ (CKKg x Kg) (+)= cols_g (CKKg x nbL) . T_gᵀ, chunks in order.
                 * With few output tiles and a long reduction, the reduction is cut
                 * into nsplit segments at fixed columns, each into its own partial
                 * buffer, and the partials are summed in segment order. */
#pragma omp for schedule(dynamic, 1)
                for (i = 0; i < nsplit * G * nkb * nwcb; ++i) {
                    const int64_t cb = i % nwcb, kb = (i / nwcb) % nkb;
                    const int64_t gi = (i / (nwcb * nkb)) % G, sp = i / (nwcb * nkb * G);
                    const int64_t c0 = cb * wcbs, k0 = gi * Kg + kb * kbs;
                    const int64_t seg = (nbL + nsplit - 1) / nsplit, j0 = sp * seg;
                    const int m = (int)CC_MIN(wcbs, CKKg - c0), nn = (int)CC_MIN(kbs, Kg - kb * kbs);
                    const int kk = (int)CC_MIN(seg, nbL - j0), lda = (int)nbL, ldb = (int)nbL;
                    const int ldc = (int)CKKg;
                    const int accumulate = nsplit == 1 && n0 > 0;
                    REAL *c = nsplit > 1 ? partial + sp * g->K * CKKg : dw;
                    if (kk <= 0) {
                        int64_t q, r;
                        for (q = 0; q < nn; ++q)
                            for (r = 0; r < m; ++r) c[(k0 + q) * CKKg + c0 + r] = 0;
                        continue;
                    }
                    FN(gemm_tn)(gemm, m, nn, kk, cols + (gi * CKKg + c0) * nbL + j0, lda,
                                T + k0 * nbL + j0, ldb, accumulate, c + k0 * CKKg + c0, ldc);
                }
                if (nsplit > 1) {
#pragma omp for schedule(static)
                    for (i = 0; i < g->K * CKKg; ++i) {
                        REAL v = n0 == 0 ? 0 : dw[i];
                        int64_t sp;
                        for (sp = 0; sp < nsplit; ++sp) v += partial[sp * g->K * CKKg + i];
                        dw[i] = v;
                    }
                }
            } else {
#pragma omp barrier
            }
            if (dx && !Wt) {
                /* dcols_g (CKKg x nbL) = W_gᵀ . T_g, over the columns just used */
#pragma omp for schedule(dynamic, 1)
                for (i = 0; i < G * nmb * ncb; ++i) {
                    const int64_t cb = i % ncb, mb = (i / ncb) % nmb, gi = i / (ncb * nmb);
                    const int64_t m0 = mb * mbs, c0 = cb * cbs;
                    const int m = (int)CC_MIN(mbs, nbL - m0), nn = (int)CC_MIN(cbs, CKKg - c0);
                    const int kk = (int)Kg, lda = (int)nbL, ldb = (int)CKKg, ldc = (int)nbL;
                    const REAL one = 1, zero = 0;
                    gemm("N", "T", &m, &nn, &kk, &one, T + gi * Kg * nbL + m0, &lda,
                         w + gi * Kg * CKKg + c0, &ldb, &zero, cols + (gi * CKKg + c0) * nbL + m0, &ldc);
                }
#pragma omp for schedule(static)
                for (i = 0; i < FN(col2im_ntasks)(g, nb); ++i)
                    FN(col2im_task)(cols, g, i, nb, nbL, dx + n0 * g->C * HW);
            }
        }
        if (Wt) {
            /* dcols (CKK x nbL) = Wᵀ . T (the kernel starts its own team) */
            int64_t i;
            if (FN(pw_images)(Wt, CKK, g->K, T, 1, nbL, NULL, n_threads, cols, NULL) != CC_OK) {
                free(Wt);
                return CC_ENOMEM;
            }
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1) schedule(static)
            for (i = 0; i < FN(col2im_ntasks)(g, nb); ++i)
                FN(col2im_task)(cols, g, i, nb, nbL, dx + n0 * g->C * HW);
        }
    }
    free(Wt);
    return CC_OK;
}


/* the strategy interface */
static int FN(batched_fwd)(const REAL *x, const REAL *w, const REAL *b, const cc_conv_geom *g,
                          REAL *work, int64_t work_elems, int64_t B, int n_threads,
                          GEMM_T gemm, REAL *y)
{
    (void)work_elems;
    return FN(fwd_batched)(x, w, b, g, work, B, n_threads, gemm, y);
}

static int FN(batched_bwd)(const REAL *dy, const REAL *x, const REAL *w, const cc_conv_geom *g,
                          REAL *work, int64_t work_elems, int64_t B, int n_threads,
                          GEMM_T gemm, REAL *dx, REAL *dw)
{
    (void)work_elems;
    return FN(bwd_batched)(dy, x, w, g, work, B, n_threads, gemm, dx, dw);
}
