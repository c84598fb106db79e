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

@compute @workgroup_size(256)
fn gather_batch(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    let plane = gather.height * gather.width;
    let sample = gather.channels * plane;
    if i >= gather.rows * sample {
        return;
    }
    let r = i / sample;
    let q = i % sample;
    let c = q / plane;
    let y = (q / gather.width) % gather.height;
    let x = q % gather.width;
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
        let at = (index - gather.first) * sample + c * plane + u32(sy) * gather.width + u32(sx);
        byte = (images[at / 4u] >> ((at % 4u) * 8u)) & 255u;
    }
    input[i] = pixel_values[byte];
    if q == 0u {
        labels_out[r] = labels[index];
    }
}
