// BatchNorm2d over NCHW with PyTorch's rules. The per-channel reductions run one 256-thread
// workgroup per channel (a tree sum in workgroup memory) while a channel has few values; past
// that, `batchnorm_partial` cuts each channel into `chunks` spans, one workgroup each, and
// `batchnorm_finish` adds the spans' sums per channel, so a wide batch fills the device and no
// invocation loops long (llvmpipe ends an invocation's loops after 65,535 iterations). The rest
// is element-wise.
// CPU twins: src/cpu/batchnorm.rs. Test: tests/cross_check_batchnorm.rs.

struct Params {
    rows: u32,
    channels: u32,
    pixels: u32,
    train: u32,
    eps: f32,
    momentum: f32,
    // batchnorm_partial / batchnorm_finish: spans per channel, and which sums (see below).
    chunks: u32,
    mode: u32,
}

@group(0) @binding(0) var<uniform> params: Params;

var<workgroup> part_a: array<f32, 256>;
var<workgroup> part_b: array<f32, 256>;

// Index of the j-th value (0 <= j < rows·pixels) of channel c.
fn at(c: u32, j: u32) -> u32 {
    return ((j / params.pixels) * params.channels + c) * params.pixels + j % params.pixels;
}

fn reduce(t: u32) {
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if t < s {
            part_a[t] += part_a[t + s];
            part_b[t] += part_b[t + s];
        }
        workgroupBarrier();
    }
}

@group(0) @binding(1) var<storage, read> stats_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats_saved: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_var: array<f32>;

@compute @workgroup_size(256)
fn batchnorm_stats(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let c = group.x;
    let m = params.rows * params.pixels;
    let mf = f32(m);
    var mean = running_mean[c];
    var var_ = running_var[c];
    if params.train != 0u {
        var s = 0.0;
        for (var j = t; j < m; j += 256u) {
            s += stats_x[at(c, j)];
        }
        part_a[t] = s;
        part_b[t] = 0.0;
        reduce(t);
        mean = part_a[0] / mf;
        workgroupBarrier();
        var q = 0.0;
        for (var j = t; j < m; j += 256u) {
            let d = stats_x[at(c, j)] - mean;
            q += d * d;
        }
        part_a[t] = q;
        reduce(t);
        var_ = part_a[0] / mf;
    }
    if t == 0u {
        if params.train != 0u {
            var unbiased = var_;
            if m > 1u {
                unbiased = var_ * mf / (mf - 1.0);
            }
            running_mean[c] = (1.0 - params.momentum) * running_mean[c] + params.momentum * mean;
            running_var[c] = (1.0 - params.momentum) * running_var[c] + params.momentum * unbiased;
        }
        stats_saved[c] = mean;
        stats_saved[params.channels + c] = 1.0 / sqrt(var_ + params.eps);
    }
}

@group(0) @binding(1) var<storage, read> fwd_x: array<f32>;
@group(0) @binding(2) var<storage, read> fwd_saved: array<f32>;
@group(0) @binding(3) var<storage, read> fwd_gamma: array<f32>;
@group(0) @binding(4) var<storage, read> fwd_beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> fwd_y: array<f32>;

@compute @workgroup_size(256)
fn batchnorm_forward(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                     @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= params.rows * params.channels * params.pixels {
        return;
    }
    let c = (i / params.pixels) % params.channels;
    fwd_y[i] = (fwd_x[i] - fwd_saved[c]) * fwd_saved[params.channels + c] * fwd_gamma[c] + fwd_beta[c];
}

@group(0) @binding(1) var<storage, read> red_x: array<f32>;
@group(0) @binding(2) var<storage, read> red_dy: array<f32>;
@group(0) @binding(3) var<storage, read> red_saved: array<f32>;
@group(0) @binding(4) var<storage, read_write> red_grad_gamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> red_grad_beta: array<f32>;

@compute @workgroup_size(256)
fn batchnorm_backward_reduce(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let c = group.x;
    let m = params.rows * params.pixels;
    let mean = red_saved[c];
    let invstd = red_saved[params.channels + c];
    var gg = 0.0;
    var gb = 0.0;
    for (var j = t; j < m; j += 256u) {
        let i = at(c, j);
        gg += red_dy[i] * (red_x[i] - mean) * invstd;
        gb += red_dy[i];
    }
    part_a[t] = gg;
    part_b[t] = gb;
    reduce(t);
    if t == 0u {
        red_grad_gamma[c] = part_a[0];
        red_grad_beta[c] = part_b[0];
    }
}

@group(0) @binding(1) var<storage, read> bwd_x: array<f32>;
@group(0) @binding(2) var<storage, read> bwd_dy: array<f32>;
@group(0) @binding(3) var<storage, read> bwd_saved: array<f32>;
@group(0) @binding(4) var<storage, read> bwd_gamma: array<f32>;
@group(0) @binding(5) var<storage, read> bwd_grad_gamma: array<f32>;
@group(0) @binding(6) var<storage, read> bwd_grad_beta: array<f32>;
@group(0) @binding(7) var<storage, read_write> bwd_dx: array<f32>;

@compute @workgroup_size(256)
fn batchnorm_backward(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                      @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= params.rows * params.channels * params.pixels {
        return;
    }
    let c = (i / params.pixels) % params.channels;
    let m = f32(params.rows * params.pixels);
    let mean = bwd_saved[c];
    let invstd = bwd_saved[params.channels + c];
    let scale = bwd_gamma[c] * invstd / m;
    let xhat = (bwd_x[i] - mean) * invstd;
    bwd_dx[i] = scale * (m * bwd_dy[i] - bwd_grad_beta[c] - xhat * bwd_grad_gamma[c]);
}

// batchnorm_partial: workgroup (c, k) sums span k of channel c's values into
// partials[2·(c·chunks + k)] and [.. + 1]. mode 0: Σx; mode 1: Σ(x - mean)², mean from saved;
// mode 2: Σ dy·x̂ and Σ dy (the backward sums), mean and invstd from saved.
@group(0) @binding(1) var<storage, read> part_x: array<f32>;
@group(0) @binding(2) var<storage, read> part_dy: array<f32>;
@group(0) @binding(3) var<storage, read> part_saved: array<f32>;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>;

@compute @workgroup_size(256)
fn batchnorm_partial(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let c = group.x;
    let k = group.y;
    let m = params.rows * params.pixels;
    let span = (m + params.chunks - 1u) / params.chunks;
    let begin = min(k * span, m);
    let end = min(begin + span, m);
    let mean = part_saved[c];
    let invstd = part_saved[params.channels + c];
    var a = 0.0;
    var b = 0.0;
    for (var j = begin + t; j < end; j += 256u) {
        let i = at(c, j);
        let x = part_x[i];
        if params.mode == 0u {
            a += x;
        } else if params.mode == 1u {
            let d = x - mean;
            a += d * d;
        } else {
            let dy = part_dy[i];
            a += dy * (x - mean) * invstd;
            b += dy;
        }
    }
    part_a[t] = a;
    part_b[t] = b;
    reduce(t);
    if t == 0u {
        let at_ = 2u * (c * params.chunks + k);
        partials[at_] = part_a[0];
        partials[at_ + 1u] = part_b[0];
    }
}

// batchnorm_finish: per channel, the spans' sums in span order. mode 0: saved[c] = the mean;
// mode 1: the variance: running averages (out_a, out_b = running_mean, running_var) and
// saved[C + c] = invstd, as batchnorm_stats; mode 2: out_a, out_b = grad_gamma, grad_beta.
@group(0) @binding(1) var<storage, read> fin_partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> fin_saved: array<f32>;
@group(0) @binding(3) var<storage, read_write> fin_a: array<f32>;
@group(0) @binding(4) var<storage, read_write> fin_b: array<f32>;

@compute @workgroup_size(64)
fn batchnorm_finish(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let c = group.x * 64u + t;
    if c >= params.channels {
        return;
    }
    var a = 0.0;
    var b = 0.0;
    for (var k = 0u; k < params.chunks; k++) {
        a += fin_partials[2u * (c * params.chunks + k)];
        b += fin_partials[2u * (c * params.chunks + k) + 1u];
    }
    let m = params.rows * params.pixels;
    let mf = f32(m);
    if params.mode == 0u {
        fin_saved[c] = a / mf;
    } else if params.mode == 1u {
        let mean = fin_saved[c];
        let var_ = a / mf;
        var unbiased = var_;
        if m > 1u {
            unbiased = var_ * mf / (mf - 1.0);
        }
        fin_a[c] = (1.0 - params.momentum) * fin_a[c] + params.momentum * mean;
        fin_b[c] = (1.0 - params.momentum) * fin_b[c] + params.momentum * unbiased;
        fin_saved[params.channels + c] = 1.0 / sqrt(var_ + params.eps);
    } else {
        fin_a[c] = a;
        fin_b[c] = b;
    }
}
