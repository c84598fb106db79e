// What every matmul variant shares (put in front of matmul*.wgsl by src/gpu/kernels.rs).
//
// K is cut into ranges: workgroup z sums k in [k_begin + z·k_chunk, … + k_chunk) ∩ [0, k). A
// long K is cut for two reasons. Parallelism: a weight gradient such as LeNet's first conv
// (32 × 73,728 × 28 at batch 128) is one output tile, so without splits one workgroup does all
// the work. And lavapipe: llvmpipe ends every loop of an invocation silently once the loops
// together have run 65,535 iterations (LP_MAX_TGSI_LOOP_ITERATIONS, shared by all loops of a
// shader), so one invocation walking K = 60,000 returned a partial sum. The host keeps each
// range short enough for that (src/gpu/matmul.rs) and records more passes when K is longer.
//
// With one split, workgroup z = 0 writes C (adding to it when `accumulate` is set, for the
// passes after the first); with several, split z writes its partial sums to slice z of a
// scratch buffer and `sum_splits` (shaders/reduce.wgsl) adds the slices into C.
//
// Epilogue (`matmul_bias`, the conv forward): when `epilogue` is set, the kernel that writes C's
// final values adds bias[col] (bit 0) and then applies ReLU (bit 1) as it stores them, saving a
// separate `add_bias` pass over C; with bit 2, C's rows are a conv's output pixels, row =
// n·pixels + p, and C[row, col] is stored at NCHW y[n, col, p] (saving `to_channels_first`).
// Only a single-pass plan's matmul or its `sum_splits` sets it (src/gpu/mod.rs). The matmul
// pipelines that may are compiled with EPILOGUE 1 (bias, ReLU) or 2 (and the NCHW store); the
// others (0) leave the code out.

struct MatmulParams {
    m: u32,
    k: u32,
    n: u32,
    k_begin: u32,
    k_chunk: u32,
    accumulate: u32,
    // `register` only: bit 0 set when A is loaded as vec4s, bit 1 for B (see that shader).
    vec4_loads: u32,
    // Bit 0: add bias[col]; bit 1: then ReLU. The NCHW store is the pipeline's (EPILOGUE 2);
    // the host sets bit 2 for it too (the flags `sum_splits` gets), which no matmul reads.
    epilogue: u32,
    // Output pixels per sample for the NCHW store (1 otherwise).
    pixels: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override EPILOGUE: u32 = 0u;

// The epilogue's bias; a placeholder buffer when there is none.
@group(0) @binding(4) var<storage, read> bias: array<f32>;

// v with the epilogue applied, for column `col`: selects, not branches, since the register
// kernel inlines this at 64 stores and branches there cost lavapipe's LLVM seconds. The bias is
// read even when unused: then element 0 of the placeholder bound in its place.
fn epilogue(col: u32, v: f32) -> f32 {
    let has_bias = (params.epilogue & 1u) != 0u;
    let biased = select(v, v + bias[select(0u, col, has_bias)], has_bias);
    return select(biased, max(biased, 0.0), (params.epilogue & 2u) != 0u);
}

// [start, end) of the K range of split z.
fn k_range(z: u32) -> vec2<u32> {
    let start = params.k_begin + z * params.k_chunk;
    return vec2<u32>(start, min(start + params.k_chunk, params.k));
}

// Where C[row, col] goes: row-major, or NCHW for a conv's output (see above).
fn nchw_index(row: u32, col: u32, cols: u32, pixels: u32) -> u32 {
    return (row / pixels) * cols * pixels + col * pixels + row % pixels;
}

fn store_c(z: u32, row: u32, col: u32, v: f32) {
    // An epilogue pipeline is only run as the single pass that writes C (z = 0, no accumulate).
    if EPILOGUE == 1u {
        c[row * params.n + col] = epilogue(col, v);
        return;
    }
    if EPILOGUE == 2u {
        c[nchw_index(row, col, params.n, params.pixels)] = epilogue(col, v);
        return;
    }
    let i = z * params.m * params.n + row * params.n + col;
    if params.accumulate != 0u {
        c[i] += v;
    } else {
        c[i] = v;
    }
}

// Up to four columns of one row of C (those inside it).
fn store_vec4(z: u32, row: u32, col: u32, v: vec4<f32>) {
    if row >= params.m {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if col + j < params.n {
            store_c(z, row, col + j, v[j]);
        }
    }
}
