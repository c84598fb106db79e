// gather_batch: a batch assembled on the device from a data set it holds, so that a training step
// uploads only each sample's index and augmentation (8 bytes) instead of its pixels. For sample r,
// batch[2r] is its index in the data set and batch[2r + 1] its augmentation code:
// (dy + 128) | (dx + 128) << 8 | flip << 16 (src/data/loader.rs draws them, seeded, for both
// backends). input[r, c, y, x] = image[c, y + dy, x' + dx] / 255 with x' = w - 1 - x when
// flipped, 0 outside the image (the CPU's `augment_image`, then `pixels_to_f32`'s table), and
// labels_out[r] = labels[index].
// A data set larger than one binding is split across buffers of whole samples, one dispatch per
// buffer: `images` holds samples first..first + held, and rows whose index lies outside are left
// for another buffer's dispatch.
// CPU twin: src/cpu/elementwise.rs (`gather_batch`). Test: tests/cross_check_elementwise.rs.

struct GatherParams {
    rows: u32,
    channels: u32,
    height: u32,
    width: u32,
    first: u32,
    held: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> gather: GatherParams;
@group(0) @binding(1) var<storage, read> images: array<u32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read> batch: array<u32>;
@group(0) @binding(4) var<storage, read> pixel_values: array<f32>;
@group(0) @binding(5) var<storage, read_write> input: array<f32>;
@group(0) @binding(6) var<storage, read_write> labels_out: array<u32>;

// One value: sample r of the batch, at (c, y, x), element q of the sample, i of the batch.
fn gather_one(r: u32, q: u32, c: u32, y: u32, x: u32, i: u32) {
    let plane = gather.height * gather.width;
    let index = batch[2u * r];
    if index < gather.first || index - gather.first >= gather.held {
        return;
    }
    let code = batch[2u * r + 1u];
    let dy = i32(code & 255u) - 128;
    let dx = i32((code >> 8u) & 255u) - 128;
    var xx = x;
    if ((code >> 16u) & 1u) == 1u {
        xx = gather.width - 1u - x;
    }
    let sy = i32(y) + dy;
    let sx = i32(xx) + dx;
    var byte = 0u;
    if sy >= 0 && sx >= 0 && sy < i32(gather.height) && sx < i32(gather.width) {
        let at = (index - gather.first) * (gather.channels * plane) + c * plane
            + u32(sy) * gather.width + u32(sx);
        byte = (images[at / 4u] >> ((at % 4u) * 8u)) & 255u;
    }
    input[i] = pixel_values[byte];
    if q == 0u {
        labels_out[r] = labels[index];
    }
}

// Four consecutive values per thread: the position of the first is worked out once and the
// next three stepped to (integer division is a long sequence on lavapipe).
@compute @workgroup_size(256)
fn gather_batch(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                @builtin(local_invocation_index) local: u32) {
    let i0 = flat_index(group, groups, local) * 4u;
    let sample = gather.channels * gather.height * gather.width;
    let total = gather.rows * sample;
    if i0 >= total {
        return;
    }
    var r = i0 / sample;
    var q = i0 % sample;
    var c = q / (gather.height * gather.width);
    var y = (q / gather.width) % gather.height;
    var x = q % gather.width;
    for (var j = 0u; j < 4u && i0 + j < total; j++) {
        gather_one(r, q, c, y, x, i0 + j);
        x += 1u;
        q += 1u;
        if x == gather.width {
            x = 0u;
            y += 1u;
            if y == gather.height {
                y = 0u;
                c += 1u;
                if c == gather.channels {
                    c = 0u;
                    r += 1u;
                    q = 0u;
                }
            }
        }
    }
}
