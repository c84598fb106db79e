// Convolution as im2col + the matmul: the reshuffles around the matmul. Every kernel is a
// gather (a thread per output value, or per four for im2col), so there are no atomics and
// results are exact.
// CPU twins: src/cpu/conv.rs. Test: tests/cross_check_conv.rs.

struct Layout {
    rows: u32,
    pixels: u32,
    channels: u32,
    flags: u32, // bit 0: add bias, bit 1: ReLU (as the matmul epilogue's)
}

@group(0) @binding(0) var<uniform> win: Window;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// col[(n, oy, ox), (c, ky, kx)] = x[n, c, oy*sh + ky - ph, ox*sw + kx - pw], 0 off the image,
// in rows of col_width (0 past the patch, so the matmuls can load whole vec4s). One thread per
// four consecutive values of a row (col_width is a multiple of 4): the row's position and the
// first tap are worked out once and the next three taps stepped to, which costs lavapipe (where
// every integer division is a long sequence) a fraction of one thread per value.
@compute @workgroup_size(256)
fn im2col(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
          @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    let patch_len = win.channels * win.kernel_h * win.kernel_w;
    let quads = win.col_width / 4u;
    if i >= win.rows * win.out_h * win.out_w * quads {
        return;
    }
    let r = i / quads;
    let q0 = (i % quads) * 4u;
    let ox = r % win.out_w;
    let oy = (r / win.out_w) % win.out_h;
    let n = r / (win.out_w * win.out_h);
    let y0 = i32(oy * win.stride_h) - i32(win.pad_h);
    let x0 = i32(ox * win.stride_w) - i32(win.pad_w);
    var kx = q0 % win.kernel_w;
    var ky = (q0 / win.kernel_w) % win.kernel_h;
    var c = q0 / (win.kernel_w * win.kernel_h);
    for (var j = 0u; j < 4u; j++) {
        var v = 0.0;
        let iy = y0 + i32(ky);
        let ix = x0 + i32(kx);
        if q0 + j < patch_len && iy >= 0 && ix >= 0 && iy < i32(win.height) && ix < i32(win.width) {
            v = src[((n * win.channels + c) * win.height + u32(iy)) * win.width + u32(ix)];
        }
        dst[r * win.col_width + q0 + j] = v;
        kx += 1u;
        if kx == win.kernel_w {
            kx = 0u;
            ky += 1u;
            if ky == win.kernel_h {
                ky = 0u;
                c += 1u;
            }
        }
    }
}

// The smallest tap k with k ≡ t (mod stride) and (t - k) / stride < out (the last output that
// covers padded position t); it may exceed t or the kernel, and then no tap lands.
fn first_tap(t: u32, stride: u32, out: u32) -> u32 {
    if out == 0u {
        return t + 1u;
    }
    let reach = stride * (out - 1u);
    if t > reach {
        return t - reach;
    }
    return t % stride;
}

// The adjoint of im2col: each input value sums its patch entries (ky outer, kx inner).
@compute @workgroup_size(256)
fn col2im(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
          @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= win.rows * win.channels * win.height * win.width {
        return;
    }
    let ix = i % win.width;
    let iy = (i / win.width) % win.height;
    let c = (i / (win.width * win.height)) % win.channels;
    let n = i / (win.width * win.height * win.channels);
    // Only the taps that land on an output: ky ≡ ty (mod stride) with 0 <= (ty - ky)/stride <
    // out_h, visited in ascending order (the sum's order is unchanged) by stepping the stride,
    // so there is one division per axis instead of two per tap.
    let ty = iy + win.pad_h;
    let tx = ix + win.pad_w;
    let ky0 = first_tap(ty, win.stride_h, win.out_h);
    let kx0 = first_tap(tx, win.stride_w, win.out_w);
    var sum = 0.0;
    var oy = (ty - ky0) / win.stride_h;
    for (var ky = ky0; ky < win.kernel_h && ky <= ty; ky += win.stride_h) {
        var ox = (tx - kx0) / win.stride_w;
        for (var kx = kx0; kx < win.kernel_w && kx <= tx; kx += win.stride_w) {
            sum += src[((n * win.out_h + oy) * win.out_w + ox) * win.col_width + (c * win.kernel_h + ky) * win.kernel_w + kx];
            ox -= 1u;
        }
        oy -= 1u;
    }
    dst[i] = sum;
}

@group(0) @binding(0) var<uniform> lay: Layout;
@group(0) @binding(1) var<storage, read> rows_in: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> nchw_out: array<f32>;

// y[n, c, p] = z[n*pixels + p, c] (+ bias[c]) (then ReLU): the conv forward's store when its
// matmul takes passes one after another (else the matmul's NCHW epilogue does this).
@compute @workgroup_size(256)
fn to_channels_first(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                     @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= lay.rows * lay.channels * lay.pixels {
        return;
    }
    let p = i % lay.pixels;
    let c = (i / lay.pixels) % lay.channels;
    let n = i / (lay.pixels * lay.channels);
    var v = rows_in[(n * lay.pixels + p) * lay.channels + c];
    if (lay.flags & 1u) != 0u {
        v = v + bias[c];
    }
    if (lay.flags & 2u) != 0u {
        v = max(v, 0.0);
    }
    nchw_out[i] = v;
}

@group(0) @binding(1) var<storage, read> nchw_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> rows_out: array<f32>;

// z[n*pixels + p, c] = y[n, c, p]. One thread per z element, so writes are contiguous.
@compute @workgroup_size(256)
fn to_channels_last(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                    @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= lay.rows * lay.channels * lay.pixels {
        return;
    }
    let c = i % lay.channels;
    let p = (i / lay.channels) % lay.pixels;
    let n = i / (lay.channels * lay.pixels);
    rows_out[i] = nchw_in[(n * lay.channels + c) * lay.pixels + p];
}
