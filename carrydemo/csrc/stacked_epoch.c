/* One training epoch of K small models, member after member, in plain C.

   The CPU kernel of carrydemo.stacked (carrydemo/kernels.py compiles it and
   StackedRun.run_kernel_epoch calls it). For the same weights and batch
   orders it does what the stacked trainer's tensor operations do: every
   mini-batch takes a forward pass, a backward pass written by hand, and one
   Adam step as torch.optim.Adam takes it. Written in C because at these sizes
   (a few hundred parameters, batches of 32) a tensor operation's fixed cost
   is many times its arithmetic; here an operation costs only its arithmetic.

   Layout: the examples of a batch lie along the lanes of short vectors (GCC's
   and Clang's vector extension, 8 floats, one AVX register), so a layer is a
   loop of multiply-adds over whole vectors and a softmax over the ten classes
   is elementwise across lanes. Rows are padded to whole blocks of 32
   examples; the padding's gradient is masked to zero. For the weight
   gradients the same batch is also held as one row per example.

   Both entry points return 0, or a negative number when a size is outside
   what the buffers were written for, or memory runs out. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 8
/* Vectors worked on at once: four independent sums keep the multiply-add
   units busy, where one sum would wait on each add before the next. A row
   holds a whole number of blocks (32 examples each). */
#define BLOCK 4
#define NUM_CLASSES 10
#define FEATURE_SIZE 2
#define MAX_SIZE 4096 /* largest hidden size, batch size or digit count */

typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(LANES * sizeof(int32_t))));

/* --- vector helpers -------------------------------------------------------- */

static inline vf splat(float x) { return (vf){0} + x; }

static inline vf select_where(vi mask, vf yes, vf no) {
    return (vf)(((vi)yes & mask) | ((vi)no & ~mask));
}

static inline vf vmax(vf a, vf b) { return select_where(a > b, a, b); }

static inline vf vmin(vf a, vf b) { return select_where(a < b, a, b); }

/* e^x for every lane: 2^n e^r with n = round(x / ln 2), |r| <= ln 2 / 2, and
   e^r from Cephes' degree-7 polynomial (about 1 ulp). x is clamped to where
   2^n is a normal float, so that the exponent fits its bits; a NaN stays NaN,
   so that a diverging model shows in its loss, as it does in PyTorch. */
static inline vf vexp(vf input) {
    vf x = vmin(vmax(input, splat(-87.3365f)), splat(88.3762f));
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: rounds to integers */
    vf n = (x * 1.44269504088896341f + round_magic) - round_magic;
    vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
    vf p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    vi exponent = (__builtin_convertvector(n, vi) + 127) << 23;
    return select_where(input == input, p * (vf)exponent, input);
}

/* tanh(x) = 1 - 2 / (e^(2x) + 1); absolute error about 1e-7, as PyTorch's. */
static inline vf vtanh(vf x) { return 1.0f - 2.0f / (vexp(x + x) + 1.0f); }

/* --- shared steps -------------------------------------------------------------- */

typedef struct {
    int lanes;   /* vectors per row: the batch, rounded up to whole vectors */
    int size;    /* examples in this batch */
    float scale; /* 1/n of the mean NLL: n = examples x digits */
    vf *valid;   /* 1 in the lanes of real examples, 0 in the padding */
} Batch;

static void set_batch(Batch *batch, int size, int num_digits) {
    batch->size = size;
    batch->lanes = (size + BLOCK * LANES - 1) / (BLOCK * LANES) * BLOCK;
    batch->scale = 1.0f / ((float)size * (float)num_digits);
    for (int lane = 0; lane < batch->lanes * LANES; lane++)
        batch->valid[lane / LANES][lane % LANES] = lane < size ? 1.0f : 0.0f;
}

/* Log-softmax over one digit's ten logits z[class][lane]: adds the examples'
   log-likelihood of their labels to *log_likelihood and overwrites z with
   n times the NLL gradient, (softmax - one-hot) * scale, zero in padding. */
static void softmax_nll(vf *z, const int32_t *labels, const Batch *batch,
                        double *log_likelihood) {
    int lanes = batch->lanes;
    for (int vector = 0; vector < lanes; vector++) {
        vf top = z[vector];
        for (int c = 1; c < NUM_CLASSES; c++) top = vmax(top, z[c * lanes + vector]);
        vf e[NUM_CLASSES], total = splat(0.0f);
        for (int c = 0; c < NUM_CLASSES; c++) {
            e[c] = vexp(z[c * lanes + vector] - top);
            total += e[c];
        }
        /* the likelihood, lane by lane: one log per example and digit */
        for (int lane = 0; lane < LANES; lane++) {
            int example = vector * LANES + lane;
            if (example >= batch->size) break;
            int label = labels[example];
            float logit = z[label * lanes + vector][lane];
            *log_likelihood += logit - top[lane] - logf(total[lane]);
        }
        vf factor = batch->scale / total * batch->valid[vector];
        for (int c = 0; c < NUM_CLASSES; c++) z[c * lanes + vector] = e[c] * factor;
        for (int lane = 0; lane < LANES; lane++) {
            int example = vector * LANES + lane;
            if (example < batch->size)
                z[labels[example] * lanes + vector][lane] -= batch->scale;
        }
    }
}

/* One step of Adam, as torch.optim.Adam (no weight decay, no amsgrad). */
static void adam_step(float *params, const float *grads, float *exp_avg,
                      float *exp_avg_sq, int count, double lr, int64_t step,
                      double beta1, double beta2, double eps) {
    double bias_correction1 = 1.0 - pow(beta1, (double)step);
    double bias_correction2 = 1.0 - pow(beta2, (double)step);
    float step_size = (float)(lr / bias_correction1);
    float correction2_sqrt = (float)sqrt(bias_correction2);
    float b1 = (float)(1.0 - beta1), b2 = (float)beta2, c2 = (float)(1.0 - beta2);
    float epsilon = (float)eps;
    for (int i = 0; i < count; i++) {
        float grad = grads[i];
        float m = exp_avg[i] + b1 * (grad - exp_avg[i]);
        float v = exp_avg_sq[i] * b2 + c2 * grad * grad;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        params[i] -= step_size * m / (sqrtf(v) / correction2_sqrt + epsilon);
    }
}

static void *aligned_buffer(size_t bytes) {
    size_t rounded = (bytes + 63) / 64 * 64;
    void *buffer = aligned_alloc(64, rounded ? rounded : 64);
    if (buffer) memset(buffer, 0, rounded ? rounded : 64);
    return buffer;
}

/* --- buffers of one batch, both models ------------------------------------ */

/* A batch is held twice. Along the lanes (`lanes` vectors a row, one value per
   example) for the forward and backward passes; and one row per example (and
   digit) of the inputs of each layer, [inputs, 1], for the weight gradients:
   a weight's gradient is a sum over examples, and summing whole rows avoids
   summing across the lanes of a vector, once per weight. */
typedef struct {
    int hidden, digits, lanes, examples; /* examples: lanes x 8 */
    vf *inputs;      /* [digit * 2 + feature] */
    vf *activations; /* RNN: [digit + 1][unit], h_0 = 0 first; MLP: [unit] */
    vf *logits;      /* [digit * 10 + class], then n times their gradient */
    vf *d_pre;       /* gradient before the nonlinearity, laid out as above */
    vf *valid;       /* 1 in the lanes of real examples, 0 in padding */
    int32_t *labels; /* [digit][example] */
    float *rows;     /* [slot][example][row_width]: see each model */
    int row_width, slots;
    float *grads;    /* one member's gradient, laid out as its parameters */
} Buffers;

static inline vf load_unaligned(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* out[r] += sum_k w[r * row_step + k * col_step] * in[k] for r < rows, each
   out[r] and in[k] a row of `lanes` vectors: a matrix product (col_step 1)
   or its transpose (row_step 1). Two rows at once share every load of `in`. */
static void multiply_rows(vf *out, const float *w, int row_step, int col_step,
                          const vf *in, int rows, int count, int lanes) {
    for (int r = 0; r < rows; r += 2) {
        int second = r + 1 < rows ? 1 : 0; /* else the last row, done twice */
        const float *w0 = w + r * row_step, *w1 = w0 + second * row_step;
        for (int first = 0; first < lanes; first += BLOCK) {
            vf *out0 = out + r * lanes + first, *out1 = out0 + second * lanes;
            vf sums0[BLOCK], sums1[BLOCK];
            for (int v = 0; v < BLOCK; v++) sums0[v] = out0[v], sums1[v] = out1[v];
            for (int k = 0; k < count; k++) {
                float a = w0[k * col_step], b = w1[k * col_step];
                for (int v = 0; v < BLOCK; v++) {
                    vf x = in[k * lanes + first + v];
                    sums0[v] += a * x;
                    sums1[v] += b * x;
                }
            }
            for (int v = 0; v < BLOCK; v++) out0[v] = sums0[v], out1[v] = sums1[v];
        }
    }
}

/* out[r] = bias[r * step], every lane: what multiply_rows then adds to */
static void fill_rows(vf *out, const float *bias, int step, int rows, int lanes) {
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < lanes; v++)
            out[r * lanes + v] = splat(bias ? bias[r * step] : 0.0f);
}

/* The gradient of a layer's weights: g[r][col] = sum over slots s and examples
   e of d[s][r][e] * rows[s][e][offset + col], for r < count, col < width.
   d is a lane buffer read as floats; two rows r at once, each 32 columns at a
   time, so that eight independent sums are in flight. */
typedef struct {
    const float *d;
    int d_slot, d_row; /* floats between slots, between rows r */
    int offset, slots, size;
} Sums;

static void row_sums(float *g, int g_stride, int count, int width, const Sums *s,
                     const Buffers *b) {
    int slot_stride = b->examples * b->row_width;
    for (int r = 0; r < count; r += 2) {
        int pair = r + 1 < count; /* 1 when there is a second row */
        for (int col = 0; col < width; col += BLOCK * LANES) {
            vf first[BLOCK] = {0}, second[BLOCK] = {0};
            for (int slot = 0; slot < s->slots; slot++) {
                const float *d = s->d + slot * s->d_slot + r * s->d_row;
                const float *d2 = d + pair * s->d_row;
                const float *row = b->rows + slot * slot_stride + s->offset + col;
                for (int e = 0; e < s->size; e++, row += b->row_width)
                    for (int v = 0; v < BLOCK; v++) {
                        vf x = load_unaligned(row + v * LANES);
                        first[v] += d[e] * x;
                        second[v] += d2[e] * x;
                    }
            }
            int columns = width - col < BLOCK * LANES ? width - col : BLOCK * LANES;
            float *out = g + r * g_stride + col;
            for (int c = 0; c < columns; c++) out[c] = first[c / LANES][c % LANES];
            for (int c = 0; pair && c < columns; c++)
                out[g_stride + c] = second[c / LANES][c % LANES];
        }
    }
}

/* Lay one batch of one member out along the lanes, zeros in the padding, the
   examples taken in the member's order; the inputs also go into the rows,
   digit t of example e at rows[slot(t)][e][col(t)]. */
static void load_batch(Buffers *b, const float *features, const int64_t *labels,
                       const int64_t *order, const Batch *batch, int recurrent) {
    int L = batch->lanes, T = b->digits;
    memset(b->inputs, 0, sizeof(vf) * T * FEATURE_SIZE * L);
    for (int e = 0; e < batch->size; e++)
        for (int t = 0; t < T; t++) {
            int slot = recurrent ? t : 0, column = recurrent ? 0 : t * FEATURE_SIZE;
            float *row = b->rows + (slot * b->examples + e) * b->row_width + column;
            size_t example = (size_t)order[e];
            for (int f = 0; f < FEATURE_SIZE; f++) {
                float x = features[(example * T + t) * FEATURE_SIZE + f];
                b->inputs[(t * FEATURE_SIZE + f) * L + e / LANES][e % LANES] = x;
                row[f] = x;
            }
            b->labels[t * batch->size + e] = (int32_t)labels[example * T + t];
        }
}

/* Copy rows of lane vectors (count of them) into columns of the example rows,
   padding included. */
static void lanes_to_rows(Buffers *b, const vf *lanes, int count, int slot, int column,
                          const Batch *batch) {
    int width = b->row_width, L = batch->lanes;
    float *rows = b->rows + slot * b->examples * width + column;
    for (int v = 0; v < L; v++, rows += LANES * width)
        for (int k = 0; k < count; k++) {
            vf x = lanes[k * L + v];
            for (int lane = 0; lane < LANES; lane++) rows[lane * width + k] = x[lane];
        }
}

/* --- the Elman RNN ---------------------------------------------------------- */

/* Per member, the (K, P) row holds `recurrent` (H, 2 + H + 2) =
   [W_ih | W_hh | b_ih | b_hh], then `readout` (10, H + 1) = [W_out | b_out].
   Example rows: slot t holds [x_t, h_(t-1), 1, 1], the inputs of step t's
   recurrent product, and from column 2 on [h_(t-1), 1], those of step t-1's
   read-out; slots 0 to T. */
static int rnn_parameters(int hidden, int digits) {
    (void)digits;
    return hidden * (hidden + 4) + NUM_CLASSES * (hidden + 1);
}

/* rows padded to whole vectors, so that loads of them are aligned */
static inline int whole_vectors(int floats) {
    return (floats + LANES - 1) / LANES * LANES;
}

static void rnn_layout(Buffers *b) {
    b->row_width = whole_vectors(b->hidden + 4);
    b->slots = b->digits + 1;
}

static void rnn_constant_columns(Buffers *b) {
    for (int slot = 0; slot < b->slots; slot++)
        for (int e = 0; e < b->examples; e++) {
            float *row = b->rows + (slot * b->examples + e) * b->row_width;
            row[b->hidden + 2] = row[b->hidden + 3] = 1.0f;
        }
}

static void rnn_forward(const float *params, Buffers *b, const Batch *batch,
                        double *log_likelihood) {
    int H = b->hidden, L = batch->lanes, width = H + 4;
    const float *readout = params + H * width;
    /* h_0 = 0; its rows hold the last batch's h_1 when that batch was shorter */
    memset(b->activations, 0, sizeof(vf) * H * L);
    for (int t = 0; t < b->digits; t++) {
        const vf *x = b->inputs + t * FEATURE_SIZE * L;
        const vf *h = b->activations + t * H * L;
        vf *h_next = b->activations + (t + 1) * H * L;

        /* h_t = tanh(W_ih x_t + b_ih + b_hh + W_hh h_(t-1)) */
        for (int unit = 0; unit < H; unit++) {
            const float *w = params + unit * width;
            float bias = w[H + 2] + w[H + 3];
            for (int v = 0; v < L; v++)
                h_next[unit * L + v] = bias + w[0] * x[v] + w[1] * x[L + v];
        }
        multiply_rows(h_next, params + 2, width, 1, h, H, H, L);
        for (int i = 0; i < H * L; i++) h_next[i] = vtanh(h_next[i]);
        lanes_to_rows(b, h_next, H, t + 1, FEATURE_SIZE, batch);

        /* this digit's logits, then their log-softmax and its gradient */
        vf *z = b->logits + t * NUM_CLASSES * L;
        fill_rows(z, readout + H, H + 1, NUM_CLASSES, L);
        multiply_rows(z, readout, H + 1, 1, h_next, NUM_CLASSES, H, L);
        softmax_nll(z, b->labels + t * batch->size, batch, log_likelihood);
    }
}

static void rnn_backward(const float *params, Buffers *b, const Batch *batch) {
    int H = b->hidden, L = batch->lanes, T = b->digits, width = H + 4;
    const float *readout = params + H * width;

    /* through time, last digit first:
       d_pre_t = (W_out' dz_t + W_hh' d_pre_(t+1)) * (1 - h_t^2) */
    for (int t = T - 1; t >= 0; t--) {
        const vf *dz = b->logits + t * NUM_CLASSES * L;
        const vf *d_next = b->d_pre + (t + 1) * H * L;
        const vf *h = b->activations + (t + 1) * H * L;
        vf *d_pre = b->d_pre + t * H * L;
        fill_rows(d_pre, NULL, 0, H, L);
        multiply_rows(d_pre, readout, 1, H + 1, dz, H, NUM_CLASSES, L);
        if (t + 1 < T) multiply_rows(d_pre, params + 2, 1, width, d_next, H, H, L);
        for (int i = 0; i < H * L; i++) d_pre[i] *= 1.0f - h[i] * h[i];
    }

    /* weight gradients: [x_t, h_(t-1), 1, 1] and [h_t, 1] summed over digits
       and examples, weighted by the gradients of the products they feed */
    int floats = L * LANES;
    Sums recurrent = {(const float *)b->d_pre, H * floats, floats, 0, T, batch->size};
    row_sums(b->grads, width, H, width, &recurrent, b);
    Sums out = {(const float *)b->logits, NUM_CLASSES * floats, floats, 0, T,
                batch->size};
    out.offset = b->examples * b->row_width + FEATURE_SIZE; /* slot t + 1 */
    row_sums(b->grads + H * width, H + 1, NUM_CLASSES, H + 1, &out, b);
}

/* --- the MLP ------------------------------------------------------------------ */

/* Per member: `hidden` (h, 2T + 1) = [W_hidden | b_hidden], then `output`
   (10T, h + 1) = [W_output | b_output]; output row t * 10 + c is digit t's
   logit of class c. One example row: [x, 1, ReLU output, 1]. */
static int mlp_parameters(int hidden, int digits) {
    return hidden * (FEATURE_SIZE * digits + 1) + NUM_CLASSES * digits * (hidden + 1);
}

static void mlp_layout(Buffers *b) {
    b->row_width = whole_vectors(FEATURE_SIZE * b->digits + b->hidden + 2);
    b->slots = 1;
}

static void mlp_constant_columns(Buffers *b) {
    int inputs = FEATURE_SIZE * b->digits;
    for (int e = 0; e < b->examples; e++) {
        float *row = b->rows + e * b->row_width;
        row[inputs] = row[inputs + 1 + b->hidden] = 1.0f;
    }
}

static void mlp_forward(const float *params, Buffers *b, const Batch *batch,
                        double *log_likelihood) {
    int H = b->hidden, L = batch->lanes, T = b->digits;
    int inputs = FEATURE_SIZE * T;
    const float *output = params + H * (inputs + 1);

    /* hidden layer and its ReLU, written so that NaN passes, as in torch.relu */
    vf *a = b->activations;
    fill_rows(a, params + inputs, inputs + 1, H, L);
    multiply_rows(a, params, inputs + 1, 1, b->inputs, H, inputs, L);
    for (int i = 0; i < H * L; i++) a[i] = select_where(a[i] < 0.0f, splat(0.0f), a[i]);
    lanes_to_rows(b, a, H, 0, inputs + 1, batch);

    /* every digit's logits, then their log-softmax and its gradient */
    fill_rows(b->logits, output + H, H + 1, NUM_CLASSES * T, L);
    multiply_rows(b->logits, output, H + 1, 1, a, NUM_CLASSES * T, H, L);
    for (int t = 0; t < T; t++)
        softmax_nll(b->logits + t * NUM_CLASSES * L, b->labels + t * batch->size, batch,
                    log_likelihood);
}

static void mlp_backward(const float *params, Buffers *b, const Batch *batch) {
    int H = b->hidden, L = batch->lanes, T = b->digits;
    int inputs = FEATURE_SIZE * T, outputs = NUM_CLASSES * T;
    const float *output = params + H * (inputs + 1);

    /* back through the output layer and the ReLU (gradient where output > 0) */
    fill_rows(b->d_pre, NULL, 0, H, L);
    multiply_rows(b->d_pre, output, 1, H + 1, b->logits, H, outputs, L);
    for (int i = 0; i < H * L; i++)
        b->d_pre[i] = select_where(b->activations[i] > 0.0f, b->d_pre[i], splat(0.0f));

    /* weight gradients of both layers from the example rows */
    int floats = L * LANES;
    Sums hidden = {(const float *)b->d_pre, 0, floats, 0, 1, batch->size};
    row_sums(b->grads, inputs + 1, H, inputs + 1, &hidden, b);
    Sums out = {(const float *)b->logits, 0, floats, inputs + 1, 1, batch->size};
    row_sums(b->grads + H * (inputs + 1), H + 1, outputs, H + 1, &out, b);
}

/* --- one epoch of every member ------------------------------------------------ */

typedef struct {
    int (*parameters)(int hidden, int digits);
    int recurrent; /* lane rows per unit: digits + 1 if recurrent, else 1 */
    void (*layout)(Buffers *);
    void (*constant_columns)(Buffers *);
    void (*forward)(const float *, Buffers *, const Batch *, double *);
    void (*backward)(const float *, Buffers *, const Batch *);
} Model;

static void free_buffers(Buffers *b) {
    free(b->inputs), free(b->activations), free(b->logits), free(b->d_pre);
    free(b->valid), free(b->labels), free(b->rows), free(b->grads);
}

/* 0, or -2 when memory runs out */
static int allocate_buffers(Buffers *b, const Model *model, int count) {
    int T = b->digits, L = b->lanes, H = b->hidden;
    int rows = model->recurrent ? T + 1 : 1;
    model->layout(b);
    b->inputs = aligned_buffer(sizeof(vf) * T * FEATURE_SIZE * L);
    b->activations = aligned_buffer(sizeof(vf) * rows * H * L);
    b->logits = aligned_buffer(sizeof(vf) * T * NUM_CLASSES * L);
    b->d_pre = aligned_buffer(sizeof(vf) * rows * H * L);
    b->valid = aligned_buffer(sizeof(vf) * L);
    b->labels = aligned_buffer(sizeof(int32_t) * T * b->examples);
    /* row_sums reads whole blocks of 32 columns: slack after the last row */
    size_t floats = (size_t)b->slots * b->examples * b->row_width + BLOCK * LANES + 2;
    b->rows = aligned_buffer(sizeof(float) * floats);
    b->grads = aligned_buffer(sizeof(float) * count);
    if (!b->inputs || !b->activations || !b->logits || !b->d_pre || !b->valid ||
        !b->labels || !b->rows || !b->grads)
        return -2;
    model->constant_columns(b);
    return 0;
}

/* Trains every member for one epoch over its own order of the examples, and
   writes its epoch loss: the mean over batches of each batch's mean NLL, as
   the plain loop reports it. */
static int train_epoch(const Model *model, int members, int examples, int digits,
                       int hidden, int batch_size, float *params, float *exp_avg,
                       float *exp_avg_sq, const float *lrs, int64_t steps_done,
                       const float *features, const int64_t *labels,
                       const int64_t *orders, double *epoch_losses, double beta1,
                       double beta2, double eps) {
    if (members < 1 || examples < 1 || digits < 1 || digits > MAX_SIZE ||
        hidden < 1 || hidden > MAX_SIZE || batch_size < 1 || batch_size > MAX_SIZE)
        return -1;
    int T = digits, L = (batch_size + BLOCK * LANES - 1) / (BLOCK * LANES) * BLOCK;
    int count = model->parameters(hidden, digits);
    int num_batches = (examples + batch_size - 1) / batch_size;
    Buffers b = {.hidden = hidden, .digits = T, .lanes = L, .examples = L * LANES};
    int status = allocate_buffers(&b, model, count);

    /* member after member: one member's weights and state stay in the cache */
    for (int m = 0; m < members && status == 0; m++) {
        float *p = params + (size_t)m * count;
        double loss_sum = 0.0;
        for (int i = 0; i < num_batches; i++) {
            int start = i * batch_size;
            int size = examples - start < batch_size ? examples - start : batch_size;
            Batch batch = {.valid = b.valid};
            set_batch(&batch, size, T);
            load_batch(&b, features, labels, orders + (size_t)m * examples + start,
                       &batch, model->recurrent);
            double log_likelihood = 0.0;
            model->forward(p, &b, &batch, &log_likelihood);
            model->backward(p, &b, &batch);
            adam_step(p, b.grads, exp_avg + (size_t)m * count,
                      exp_avg_sq + (size_t)m * count, count, lrs[m],
                      steps_done + i + 1, beta1, beta2, eps);
            loss_sum -= log_likelihood / ((double)size * T);
        }
        epoch_losses[m] = loss_sum / num_batches;
    }
    free_buffers(&b);
    return status;
}

static const Model RNN = {rnn_parameters, 1, rnn_layout, rnn_constant_columns,
                          rnn_forward, rnn_backward};
static const Model MLP = {mlp_parameters, 0, mlp_layout, mlp_constant_columns,
                          mlp_forward, mlp_backward};

#define EPOCH_PARAMETERS                                                          \
    int members, int examples, int digits, int hidden, int batch_size,            \
        float *params, float *exp_avg, float *exp_avg_sq, const float *lrs,       \
        int64_t steps_done, const float *features, const int64_t *labels,         \
        const int64_t *orders, double *epoch_losses, double beta1, double beta2,  \
        double eps
#define EPOCH_ARGUMENTS                                                           \
    members, examples, digits, hidden, batch_size, params, exp_avg, exp_avg_sq,   \
        lrs, steps_done, features, labels, orders, epoch_losses, beta1, beta2, eps

int carrydemo_rnn_epoch(EPOCH_PARAMETERS) { return train_epoch(&RNN, EPOCH_ARGUMENTS); }

int carrydemo_mlp_epoch(EPOCH_PARAMETERS) { return train_epoch(&MLP, EPOCH_ARGUMENTS); }
