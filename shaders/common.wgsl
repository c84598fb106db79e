// Prepended to every shader file by src/gpu/kernels.rs (WGSL has no includes): what several
// kernel families share.

// The flat thread index of a 256-wide workgroup in a grid that the host folds into 2D when one
// dimension would pass the 65535-workgroup limit.
fn flat_index(group: vec3<u32>, groups: vec3<u32>, local: u32) -> u32 {
    return (group.y * groups.x + group.x) * 256u + local;
}

// A convolution or pooling window over NCHW images (the host's `backend::Window`, with the
// batch size and the output size added).
struct Window {
    rows: u32,
    channels: u32,
    height: u32,
    width: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    out_h: u32,
    out_w: u32,
    // im2col row length: the patch padded to a multiple of 4 (`Window::col_width`).
    col_width: u32,
}

