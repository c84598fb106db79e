// C[m, n] = op(A) · op(B), the `register` variant for software adapters (lavapipe, WARP,
// SwiftShader): no workgroup memory and no barriers, which are the expensive parts of a CPU
// pretending to be a GPU, and only vec4 loads (Mesa 22's lavapipe fetches each scalar load lane
// by lane). Each invocation keeps an 8×8 block of C in registers and walks its K range four at a
// time: it loads A(i0..i0+8, p..p+4) and B(p..p+4, j0..j0+8) as eight vec4s each, whatever the
// storage form, and adds their outer products. An 8×8 workgroup covers a 64×64 tile.
//
// vec4 loads need the dimension they run along to be a multiple of 4: k for A stored [m, k] and
// for B stored [n, k], m for A stored [k, m], n for B stored [k, n]. The host uses this variant
// only then (src/gpu/matmul.rs) and `tiled` otherwise. Rows and columns past the edge are read
// from the last valid ones (clamped, so no branch in the loop) and never stored; k past the end
// of the range reads as zero.
// CPU twin: src/cpu/matmul.rs. Test: tests/cross_check_matmul.rs.

@group(0) @binding(0) var<uniform> params: MatmulParams;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// A(i0 + r, p..p+4) for r in 0..8, A stored [m, k] (k % 4 == 0, p % 4 == 0).
fn a_rows(i0: u32, p: u32) -> array<vec4<f32>, 8> {
    var out: array<vec4<f32>, 8>;
    let kq = params.k / 4u;
    for (var r = 0u; r < 8u; r++) {
        out[r] = a[min(i0 + r, params.m - 1u) * kq + p / 4u];
    }
    return out;
}

// The same, A stored [k, m] (m % 4 == 0): two vec4s along m per k, transposed in registers.
fn a_rows_t(i0: u32, p: u32, k_end: u32) -> array<vec4<f32>, 8> {
    let mq = params.m / 4u;
    let q0 = min(i0 / 4u, mq - 1u);
    let q1 = min(i0 / 4u + 1u, mq - 1u);
    var lo: array<vec4<f32>, 4>;
    var hi: array<vec4<f32>, 4>;
    for (var s = 0u; s < 4u; s++) {
        let kk = min(p + s, params.k - 1u);
        let keep = select(0.0, 1.0, p + s < k_end);
        lo[s] = a[kk * mq + q0] * keep;
        hi[s] = a[kk * mq + q1] * keep;
    }
    var out: array<vec4<f32>, 8>;
    for (var r = 0u; r < 4u; r++) {
        out[r] = vec4<f32>(lo[0][r], lo[1][r], lo[2][r], lo[3][r]);
        out[r + 4u] = vec4<f32>(hi[0][r], hi[1][r], hi[2][r], hi[3][r]);
    }
    return out;
}

// B(p + s, j0 + 4h..j0 + 4h + 4) at index 2s + h, B stored [k, n] (n % 4 == 0).
fn b_rows(j0: u32, p: u32, k_end: u32) -> array<vec4<f32>, 8> {
    let nq = params.n / 4u;
    let q0 = min(j0 / 4u, nq - 1u);
    let q1 = min(j0 / 4u + 1u, nq - 1u);
    var out: array<vec4<f32>, 8>;
    for (var s = 0u; s < 4u; s++) {
        let kk = min(p + s, params.k - 1u);
        let keep = select(0.0, 1.0, p + s < k_end);
        out[2u * s] = b[kk * nq + q0] * keep;
        out[2u * s + 1u] = b[kk * nq + q1] * keep;
    }
    return out;
}

// The same, B stored [n, k] (k % 4 == 0): one vec4 along k per column, transposed in registers.
fn b_rows_t(j0: u32, p: u32) -> array<vec4<f32>, 8> {
    let kq = params.k / 4u;
    var col: array<vec4<f32>, 8>;
    for (var j = 0u; j < 8u; j++) {
        col[j] = b[min(j0 + j, params.n - 1u) * kq + p / 4u];
    }
    var out: array<vec4<f32>, 8>;
    for (var s = 0u; s < 4u; s++) {
        out[2u * s] = vec4<f32>(col[0][s], col[1][s], col[2][s], col[3][s]);
        out[2u * s + 1u] = vec4<f32>(col[4][s], col[5][s], col[6][s], col[7][s]);
    }
    return out;
}

// acc[2r + h] += A(i0 + r, p + s) · B(p + s, j0 + 4h..) for s in 0..4.
fn outer4(acc: ptr<function, array<vec4<f32>, 16>>, ar: array<vec4<f32>, 8>, bs: array<vec4<f32>, 8>) {
    for (var r = 0u; r < 8u; r++) {
        var lo = (*acc)[2u * r];
        var hi = (*acc)[2u * r + 1u];
        for (var s = 0u; s < 4u; s++) {
            let av = vec4<f32>(ar[r][s]);
            lo = fma(av, bs[2u * s], lo);
            hi = fma(av, bs[2u * s + 1u], hi);
        }
        (*acc)[2u * r] = lo;
        (*acc)[2u * r + 1u] = hi;
    }
}

fn store_block(z: u32, i0: u32, j0: u32, acc: array<vec4<f32>, 16>) {
    for (var r = 0u; r < 8u; r++) {
        let row = i0 + r;
        for (var j = 0u; j < 8u; j++) {
            let col = j0 + j;
            if row < params.m && col < params.n {
                store_c(z, row, col, acc[2u * r + j / 4u][j % 4u]);
            }
        }
    }
}

fn matmul_register(group: vec3<u32>, local: vec3<u32>, trans_a: bool, trans_b: bool) {
    let i0 = group.y * 64u + local.y * 8u;
    let j0 = group.x * 64u + local.x * 8u;
    let ks = k_range(group.z);
    var acc: array<vec4<f32>, 16>;
    for (var p = ks.x; p < ks.y; p += 4u) {
        var ar: array<vec4<f32>, 8>;
        if trans_a {
            ar = a_rows_t(i0, p, ks.y);
        } else {
            ar = a_rows(i0, p);
        }
        var bs: array<vec4<f32>, 8>;
        if trans_b {
            bs = b_rows_t(j0, p);
        } else {
            bs = b_rows(j0, p, ks.y);
        }
        outer4(&acc, ar, bs);
    }
    store_block(group.z, i0, j0, acc);
}

@compute @workgroup_size(8, 8)
fn matmul_ab_register(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    matmul_register(group, local, false, false);
}

@compute @workgroup_size(8, 8)
fn matmul_atb_register(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    matmul_register(group, local, true, false);
}

@compute @workgroup_size(8, 8)
fn matmul_abt_register(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    matmul_register(group, local, false, true);
}
