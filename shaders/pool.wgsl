// Max pooling (with padding, which never wins) and average pooling (without), forward and backward. Backward kernels gather: each input
// value sums over the windows that contain it, so overlapping windows need no atomics.
// CPU twins: src/cpu/pool.rs. Test: tests/cross_check_pool.rs.

@group(0) @binding(0) var<uniform> win: Window;

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;

@compute @workgroup_size(256)
fn maxpool(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
           @builtin(local_invocation_index) local: u32) {
    let o = flat_index(group, groups, local);
    if o >= win.rows * win.channels * win.out_h * win.out_w {
        return;
    }
    let ox = o % win.out_w;
    let oy = (o / win.out_w) % win.out_h;
    let plane = o / (win.out_w * win.out_h);
    let base = plane * win.height * win.width;
    // The window's rows and columns inside the image, as the CPU twin cuts them.
    let y0 = max(oy * win.stride_h, win.pad_h) - win.pad_h;
    let y1 = min(max(oy * win.stride_h + win.kernel_h, win.pad_h) - win.pad_h, win.height);
    let x0 = max(ox * win.stride_w, win.pad_w) - win.pad_w;
    let x1 = min(max(ox * win.stride_w + win.kernel_w, win.pad_w) - win.pad_w, win.width);
    var best = base + y0 * win.width + x0;
    for (var iy = y0; iy < y1; iy++) {
        for (var ix = x0; ix < x1; ix++) {
            let i = base + iy * win.width + ix;
            if x[i] > x[best] {
                best = i;
            }
        }
    }
    y[o] = x[best];
    argmax[o] = best;
}

@compute @workgroup_size(256)
fn avgpool(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
           @builtin(local_invocation_index) local: u32) {
    let o = flat_index(group, groups, local);
    if o >= win.rows * win.channels * win.out_h * win.out_w {
        return;
    }
    let ox = o % win.out_w;
    let oy = (o / win.out_w) % win.out_h;
    let plane = o / (win.out_w * win.out_h);
    let base = plane * win.height * win.width;
    var sum = 0.0;
    for (var ky = 0u; ky < win.kernel_h; ky++) {
        for (var kx = 0u; kx < win.kernel_w; kx++) {
            sum += x[base + (oy * win.stride_h + ky) * win.width + ox * win.stride_w + kx];
        }
    }
    y[o] = sum * (1.0 / f32(win.kernel_h * win.kernel_w));
}

// First and one-past-last window index along an axis that covers input coordinate i.
fn windows_over(i: u32, kernel: u32, stride: u32, count: u32) -> vec2<u32> {
    var lo = 0u;
    if i + 1u > kernel {
        lo = (i + 1u - kernel + stride - 1u) / stride;
    }
    let hi = min(i / stride + 1u, count);
    return vec2<u32>(lo, max(hi, lo));
}

@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> argmax_in: array<u32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn maxpool_backward(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                    @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= win.rows * win.channels * win.height * win.width {
        return;
    }
    let ix = i % win.width;
    let iy = (i / win.width) % win.height;
    let plane = i / (win.width * win.height);
    // In padded coordinates, as the windows are laid out.
    let ys = windows_over(iy + win.pad_h, win.kernel_h, win.stride_h, win.out_h);
    let xs = windows_over(ix + win.pad_w, win.kernel_w, win.stride_w, win.out_w);
    var sum = 0.0;
    for (var oy = ys.x; oy < ys.y; oy++) {
        for (var ox = xs.x; ox < xs.y; ox++) {
            let o = (plane * win.out_h + oy) * win.out_w + ox;
            if argmax_in[o] == i {
                sum += dy[o];
            }
        }
    }
    dx[i] = sum;
}

@group(0) @binding(1) var<storage, read> avg_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> avg_dx: array<f32>;

@compute @workgroup_size(256)
fn avgpool_backward(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                    @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= win.rows * win.channels * win.height * win.width {
        return;
    }
    let ix = i % win.width;
    let iy = (i / win.width) % win.height;
    let plane = i / (win.width * win.height);
    let ys = windows_over(iy, win.kernel_h, win.stride_h, win.out_h);
    let xs = windows_over(ix, win.kernel_w, win.stride_w, win.out_w);
    var sum = 0.0;
    for (var oy = ys.x; oy < ys.y; oy++) {
        for (var ox = xs.x; ox < xs.y; ox++) {
            sum += avg_dy[(plane * win.out_h + oy) * win.out_w + ox];
        }
    }
    avg_dx[i] = sum * (1.0 / f32(win.kernel_h * win.kernel_w));
}
