//! The GPU backend: WGSL compute shaders through wgpu.
//!
//! - `recorder.rs`: the device, buffers and the command list. Ops are not run one by one: each
//!   records a dispatch, and `submit` encodes the whole list into one command encoder and submits
//!   it once.
//! - this file: the ops, one per `Backend` method, each a dispatch of its kernel with typed params
//!   (`params.rs`, each struct checked against its WGSL twin).
//! - `kernels.rs`: the one table of WGSL entry points; `matmul.rs`: which matmul variant runs
//!   and how K is split; `conv.rs`: Conv2d as im2col + matmul; `profile.rs`: GPU timestamps;
//!   `context.rs`: adapters.

pub mod context;
mod conv;
pub mod kernels;
pub mod matmul;
pub mod params;
pub mod profile;
mod recorder;

use recorder::Command;
pub use recorder::{GpuBackend, GpuBuf, GpuCounters};

use crate::backend::{
    AdamHyper, Arena, Backend, BatchNormHyper, MatmulForm, Nchw, RmspropHyper, SgdHyper, Window,
};
use crate::Result;
use kernels::Kernel;
use matmul::MatmulVariant;

/// Rows per `bias_grad` workgroup. Each of a workgroup's 4 lanes per column adds every 4th row
/// of its chunk one after the other, so the chunk sets how long that chain of dependent loads
/// is. A software adapter takes fixed 4,096-row chunks (few workgroups, which suits a CPU;
/// 1,024 loads a lane stays far under llvmpipe's 65,535 loop iterations). A GPU takes about √rows rows a
/// chunk, balancing the two passes' chains: the H200 spent 0.45 ms of a 1.8 ms LeNet step in
/// 4,096-row chunks, which left its first conv's bias gradient on 18 workgroups, 1,024 loads
/// deep.
fn bias_grad_chunk(software: bool, rows: usize) -> usize {
    if software {
        4_096
    } else if rows <= 256 {
        rows.max(1)
    } else {
        ((rows as f64).sqrt().ceil() as usize).max(64).next_multiple_of(64)
    }
}

/// A `Window` as the WGSL struct lays it out, with the batch size and output size.
fn window_params(rows: usize, w: &Window) -> params::WindowParams {
    params::WindowParams {
        rows: rows as u32,
        channels: w.channels as u32,
        height: w.height as u32,
        width: w.width as u32,
        kernel_h: w.kernel_h as u32,
        kernel_w: w.kernel_w as u32,
        stride_h: w.stride_h as u32,
        stride_w: w.stride_w as u32,
        pad_h: w.pad_h as u32,
        pad_w: w.pad_w as u32,
        out_h: w.out_h() as u32,
        out_w: w.out_w() as u32,
        col_width: w.col_width() as u32,
    }
}

/// A channel's values past which batch norm's sums are cut into spans of about this many, one
/// workgroup each (`batchnorm_partial`): one workgroup per channel leaves most of a GPU idle on
/// a wide batch (ResNet's 16 channels at 128×32×32), and its loops would pass llvmpipe's limit.
const BN_SPAN: usize = 16_384;

/// Spans per channel: enough to keep each near [`BN_SPAN`] values, at most 256, so the partial
/// sums of even 2³² values per channel stay within lavapipe's loop limit. Public for the test
/// whose error bound follows the spans.
pub fn batchnorm_chunks(shape: Nchw) -> u32 {
    let m = shape.rows * shape.pixels;
    if m <= BN_SPAN {
        1
    } else {
        m.div_ceil(BN_SPAN).min(256) as u32
    }
}

fn batchnorm_params(shape: Nchw) -> params::BatchNorm {
    params::BatchNorm {
        rows: shape.rows as u32,
        channels: shape.channels as u32,
        pixels: shape.pixels as u32,
        chunks: batchnorm_chunks(shape),
        ..Default::default()
    }
}

fn layout_params(shape: Nchw) -> params::Layout {
    params::Layout {
        rows: shape.rows as u32,
        pixels: shape.pixels as u32,
        channels: shape.channels as u32,
        flags: 0,
    }
}

impl GpuBackend {
    /// Batch norm's per-channel sums of `p.mode` in `p.chunks` spans a channel
    /// (`batchnorm_partial`), then added up per channel into `saved` and `outputs`
    /// (`batchnorm_finish`; see shaders/batchnorm.wgsl).
    fn batchnorm_in_spans(
        &mut self,
        x: &GpuBuf,
        dy: &GpuBuf,
        saved: &GpuBuf,
        [out_a, out_b]: [&GpuBuf; 2],
        shape: Nchw,
        p: &params::BatchNorm,
    ) {
        let scratch = self.scratch(2 * shape.channels * p.chunks as usize);
        let grid = [shape.channels as u32, p.chunks, 1];
        self.dispatch(Kernel::BatchnormPartial, &[x, dy, saved, &scratch], p, grid);
        let finish = [shape.channels.div_ceil(64) as u32, 1, 1];
        self.dispatch(Kernel::BatchnormFinish, &[&scratch, saved, out_a, out_b], p, finish);
    }

    /// `out (+)= Σ_s part[s·len..][..len]` over `slices` slices, then the epilogue, if any, on
    /// rows of the `cols` it comes with (a matmul's n).
    fn sum_splits(
        &mut self,
        part: &GpuBuf,
        out: &GpuBuf,
        len: usize,
        slices: usize,
        accumulate: bool,
        epilogue: Option<(Epilogue, usize)>,
    ) {
        let (epilogue, cols) = (epilogue.map(|e| e.0), epilogue.map_or(1, |e| e.1));
        let p = params::Reduce {
            rows: 0,
            cols: len as u32,
            chunk: slices as u32,
            accumulate: accumulate as u32,
            epilogue: epilogue.map_or(0, |e| e.flags()),
            bias_cols: cols as u32,
            pixels: epilogue.map_or(1, |e| e.nchw_pixels.max(1) as u32),
            ..Default::default()
        };
        let groups = self.groups_1d(len);
        let bias = self.epilogue_bias(epilogue);
        self.dispatch(Kernel::SumSplits, &[part, out, &bias], &p, groups);
    }

    /// Whether a matmul of this form and shape can apply an epilogue as it stores C: `ABt`, with
    /// a plan that writes C in one pass (the matmul kernel, or `sum_splits` after a K split side
    /// by side). A plan of several passes one after another (K longer than the ranges that fit
    /// side by side cover) adds into C.
    pub(super) fn epilogue_fits(&self, form: MatmulForm, m: usize, k: usize, n: usize) -> bool {
        plan_takes_epilogue(form, k, &self.matmul_plan(form, m, k, n))
    }

    /// `matmul`, with the epilogue, if any, applied by the pass that writes C's final values
    /// (callers check [`epilogue_fits`](Self::epilogue_fits) first).
    #[allow(clippy::too_many_arguments)]
    fn matmul_with(
        &mut self,
        form: MatmulForm,
        a: &GpuBuf,
        b: &GpuBuf,
        c: &GpuBuf,
        m: usize,
        k: usize,
        n: usize,
        epilogue: Option<Epilogue>,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        let plan = self.matmul_plan(form, m, k, n);
        // An epilogue pipeline overwrites C in its one pass and is compiled for `ABt` only.
        assert!(epilogue.is_none() || plan_takes_epilogue(form, k, &plan), "epilogue misused");
        if k == 0 {
            self.fill_zero(c);
            return;
        }
        for (first, splits) in plan.passes() {
            let accumulate = first > 0;
            let last = first + splits == plan.ranges;
            let in_kernel = if last && splits == 1 { epilogue } else { None };
            let kernel = match in_kernel {
                Some(e) => plan.variant.abt_with_epilogue(e.nchw_pixels > 0),
                None => plan.variant.kernel(form),
            };
            let p = params::Matmul {
                m: m as u32,
                k: k as u32,
                n: n as u32,
                k_begin: (first * plan.k_chunk) as u32,
                k_chunk: plan.k_chunk as u32,
                accumulate: (accumulate && splits == 1) as u32,
                vec4_loads: matmul::vec4_loads(form, m, k, n),
                epilogue: in_kernel.map_or(0, |e| e.flags()),
                pixels: in_kernel.map_or(1, |e| e.nchw_pixels.max(1) as u32),
                ..Default::default()
            };
            let groups = plan.groups(m, n, splits);
            let bias = self.epilogue_bias(in_kernel);
            if splits == 1 {
                self.dispatch(kernel, &[a, b, c, &bias], &p, groups);
            } else {
                let scratch = self.scratch(splits * m * n);
                self.dispatch(kernel, &[a, b, &scratch, &bias], &p, groups);
                let e = if last { epilogue.map(|e| (e, n)) } else { None };
                self.sum_splits(&scratch, c, m * n, splits, accumulate, e);
            }
        }
    }

    /// The buffer bound as an epilogue's bias: its bias, or the placeholder.
    fn epilogue_bias(&self, epilogue: Option<Epilogue>) -> GpuBuf {
        epilogue.and_then(|e| e.bias).unwrap_or(&self.placeholder).clone()
    }
}

/// Whether `plan` writes C's final values in one pass that can apply an epilogue: only
/// `matmul_abt` (a Linear or conv forward) has pipelines with one.
fn plan_takes_epilogue(form: MatmulForm, k: usize, plan: &matmul::MatmulPlan) -> bool {
    form == MatmulForm::ABt && k > 0 && plan.ranges <= plan.splits
}

/// What a matmul's last pass does to C as it stores it: `+ bias[col]` when there is a bias,
/// then ReLU if `relu`; and with `nchw_pixels` = P > 0, C's `[rows·P, cols]` rows (a conv's
/// output pixels) are stored as NCHW `[rows, cols, P]` instead (the layout move fused).
#[derive(Clone, Copy)]
pub(super) struct Epilogue<'a> {
    pub bias: Option<&'a GpuBuf>,
    pub relu: bool,
    pub nchw_pixels: usize,
}

impl Epilogue<'_> {
    /// `epilogue` in `MatmulParams` and the reduce `Params`: bit 0 bias, bit 1 ReLU, bit 2
    /// NCHW store (the matmul pipelines know that one from `EPILOGUE`).
    fn flags(self) -> u32 {
        self.bias.is_some() as u32 | (self.relu as u32) << 1 | ((self.nchw_pixels > 0) as u32) << 2
    }
}

impl Backend for GpuBackend {
    type Buf = GpuBuf;
    type Bytes = GpuBuf;
    type Indices = GpuBuf;

    fn device_name(&self) -> String {
        self.info.name.clone()
    }

    /// 64 rows or columns per workgroup, at most max_compute_workgroups_per_dimension of them.
    fn max_matmul_dim(&self) -> usize {
        let smallest_tile = MatmulVariant::ALL.iter().map(|v| v.tile()).min().unwrap_or(1);
        self.limits.max_compute_workgroups_per_dimension as usize * smallest_tile
    }

    fn alloc(&mut self, len: usize) -> Result<GpuBuf> {
        let mut b = self.create_buffer(len * 4, "tensor")?;
        b.len = len;
        Ok(b)
    }
    fn alloc_arena(&mut self, lens: &[usize]) -> Result<Arena<GpuBuf>> {
        // Views must start where the adapter lets a binding start, and span whole vec4s.
        let align = (self.limits.min_storage_buffer_offset_alignment.max(16) / 4) as usize;
        let (starts, len) = crate::backend::arena_layout(lens, align);
        let whole = self.alloc(len)?;
        let views = starts.iter().zip(lens).map(|(&s, &n)| whole.view_of(s, n)).collect();
        Ok(Arena { whole, len, views, starts })
    }
    fn alloc_bytes(&mut self, len: usize) -> Result<GpuBuf> {
        self.create_buffer(len, "pixels")
    }
    fn alloc_indices(&mut self, len: usize) -> Result<GpuBuf> {
        let mut b = self.create_buffer(len * 4, "labels")?;
        b.len = len;
        Ok(b)
    }

    fn write(&mut self, dst: &GpuBuf, data: &[f32]) {
        self.write_raw(dst, bytemuck::cast_slice(data));
    }
    fn write_bytes(&mut self, dst: &GpuBuf, data: &[u8]) {
        self.write_raw(dst, data);
    }
    fn write_indices(&mut self, dst: &GpuBuf, data: &[u32]) {
        self.write_raw(dst, bytemuck::cast_slice(data));
    }
    fn fill_zero(&mut self, dst: &GpuBuf) {
        let size = dst.view.then_some((dst.len * 4) as u64);
        self.commands.push(Command::Clear { buffer: dst.buffer.clone(), offset: dst.offset, size });
    }

    fn copy(&mut self, src: &GpuBuf, dst: &GpuBuf, len: usize) {
        if len > 0 {
            self.commands.push(Command::Copy {
                src: src.buffer.clone(),
                src_offset: src.offset,
                dst: dst.buffer.clone(),
                dst_offset: dst.offset,
                size: (len * 4) as u64,
            });
        }
    }
    fn read(&mut self, src: &GpuBuf, len: usize) -> Result<Vec<f32>> {
        self.read_back(src, len)
    }

    fn submit(&mut self) {
        self.submit_recorded();
    }

    fn pixels_to_f32(&mut self, src: &GpuBuf, dst: &GpuBuf, len: usize) {
        let groups = self.groups_1d(len);
        let table = self.pixel_values.clone();
        let p = params::Elementwise { len: len as u32, ..Default::default() };
        self.dispatch(Kernel::PixelsToF32, &[src, dst, &table], &p, groups);
    }

    fn matmul(
        &mut self,
        form: MatmulForm,
        a: &GpuBuf,
        b: &GpuBuf,
        c: &GpuBuf,
        m: usize,
        k: usize,
        n: usize,
    ) {
        self.matmul_with(form, a, b, c, m, k, n, None);
    }

    fn matmul_bias(
        &mut self,
        form: MatmulForm,
        a: &GpuBuf,
        b: &GpuBuf,
        c: &GpuBuf,
        [m, k, n]: [usize; 3],
        bias: &GpuBuf,
        relu: bool,
    ) {
        if self.epilogue_fits(form, m, k, n) {
            let e = Epilogue { bias: Some(bias), relu, nchw_pixels: 0 };
            self.matmul_with(form, a, b, c, m, k, n, Some(e));
        } else {
            self.matmul(form, a, b, c, m, k, n);
            self.add_bias(c, bias, m, n, relu);
        }
    }

    fn add_bias(&mut self, x: &GpuBuf, bias: &GpuBuf, rows: usize, cols: usize, relu: bool) {
        let kernel = if relu { Kernel::AddBiasRelu } else { Kernel::AddBias };
        let groups = self.groups_1d(rows * cols);
        let p = params::Elementwise {
            len: (rows * cols) as u32,
            cols: cols as u32,
            ..Default::default()
        };
        self.dispatch(kernel, &[x, bias], &p, groups);
    }

    fn normalize(&mut self, x: &GpuBuf, stats: &GpuBuf, shape: Nchw) {
        let len = shape.len();
        let groups = self.groups_1d(len);
        let p = params::Normalize {
            len: len as u32,
            channels: shape.channels as u32,
            pixels: shape.pixels as u32,
            _pad: 0,
        };
        self.dispatch(Kernel::Normalize, &[x, stats], &p, groups);
    }

    fn relu(&mut self, x: &GpuBuf, len: usize) {
        let groups = self.groups_1d(len);
        let p = params::Elementwise { len: len as u32, ..Default::default() };
        self.dispatch(Kernel::Relu, &[x], &p, groups);
    }

    fn scale(&mut self, x: &GpuBuf, len: usize, factor: f32) {
        let groups = self.groups_1d(len);
        let p = params::Elementwise { len: len as u32, factor, ..Default::default() };
        self.dispatch(Kernel::Scale, &[x], &p, groups);
    }

    fn add(&mut self, a: &GpuBuf, b: &GpuBuf, out: &GpuBuf, len: usize) {
        let groups = self.groups_1d(len);
        let p = params::Elementwise { len: len as u32, ..Default::default() };
        self.dispatch(Kernel::Add, &[a, b, out], &p, groups);
    }

    fn gather_batch(
        &mut self,
        images: &GpuBuf,
        held: std::ops::Range<usize>,
        labels: &GpuBuf,
        batch: &GpuBuf,
        input: &GpuBuf,
        labels_out: &GpuBuf,
        rows: usize,
        [channels, height, width]: [usize; 3],
    ) {
        let p = params::Gather {
            rows: rows as u32,
            channels: channels as u32,
            height: height as u32,
            width: width as u32,
            first: held.start as u32,
            held: held.len() as u32,
            ..Default::default()
        };
        // Four values per thread (see the shader).
        let groups = self.groups_1d((rows * channels * height * width).div_ceil(4));
        let table = self.pixel_values.clone();
        self.dispatch(
            Kernel::GatherBatch,
            &[images, labels, batch, &table, input, labels_out],
            &p,
            groups,
        );
    }

    fn max_bytes_per_buffer(&self) -> usize {
        // `create_buffer` rounds sizes up to whole 16-byte vec4s.
        (matmul::max_binding_bytes(&self.limits) / 16 * 16) as usize
    }

    fn holds_data(&self) -> bool {
        true
    }

    fn copy_rows(
        &mut self,
        src: &GpuBuf,
        dst: &GpuBuf,
        rows: usize,
        cols: usize,
        src_width: usize,
        dst_width: usize,
    ) {
        let groups = self.groups_1d(rows * dst_width);
        let p = params::CopyRows {
            rows: rows as u32,
            cols: cols as u32,
            src_width: src_width as u32,
            dst_width: dst_width as u32,
        };
        self.dispatch(Kernel::CopyRows, &[src, dst], &p, groups);
    }

    fn conv_scratch_len(&self, rows: usize, w: &Window, outputs: usize) -> (usize, usize) {
        (rows * w.out_pixels() * w.col_width(), rows * w.out_pixels() * outputs)
    }

    fn conv2d_forward(
        &mut self,
        x: &GpuBuf,
        weight: &GpuBuf,
        bias: Option<&GpuBuf>,
        y: &GpuBuf,
        col: &GpuBuf,
        z: &GpuBuf,
        rows: usize,
        w: &Window,
        outputs: usize,
        relu: bool,
    ) {
        self.conv_forward(x, weight, bias, y, col, z, rows, w, outputs, relu);
    }

    fn conv2d_backward(
        &mut self,
        _x: &GpuBuf,
        dy: &GpuBuf,
        weight: &GpuBuf,
        grad_weight: &GpuBuf,
        grad_bias: Option<&GpuBuf>,
        dx: Option<&GpuBuf>,
        col: &GpuBuf,
        z: &GpuBuf,
        rows: usize,
        w: &Window,
        outputs: usize,
    ) {
        self.conv_backward(dy, weight, grad_weight, grad_bias, dx, col, z, rows, w, outputs);
    }

    fn im2col(&mut self, x: &GpuBuf, col: &GpuBuf, rows: usize, w: &Window) {
        // One thread per 4 values of a row (see the shader).
        let groups = self.groups_1d(rows * w.out_pixels() * w.col_width() / 4);
        self.dispatch(Kernel::Im2col, &[x, col], &window_params(rows, w), groups);
    }

    fn col2im(&mut self, col: &GpuBuf, x: &GpuBuf, rows: usize, w: &Window) {
        let groups = self.groups_1d(rows * w.in_len());
        self.dispatch(Kernel::Col2im, &[col, x], &window_params(rows, w), groups);
    }

    fn to_channels_first(
        &mut self,
        z: &GpuBuf,
        bias: Option<&GpuBuf>,
        y: &GpuBuf,
        shape: Nchw,
        relu: bool,
    ) {
        let p = params::Layout {
            flags: bias.is_some() as u32 | (relu as u32) << 1,
            ..layout_params(shape)
        };
        let groups = self.groups_1d(shape.len());
        // Without a bias, z is bound in its place (read-only twice is allowed) and never read.
        self.dispatch(Kernel::ToChannelsFirst, &[z, bias.unwrap_or(z), y], &p, groups);
    }

    fn to_channels_last(&mut self, y: &GpuBuf, z: &GpuBuf, shape: Nchw) {
        let p = layout_params(shape);
        let groups = self.groups_1d(shape.len());
        self.dispatch(Kernel::ToChannelsLast, &[y, z], &p, groups);
    }

    fn maxpool(&mut self, x: &GpuBuf, y: &GpuBuf, argmax: &GpuBuf, rows: usize, w: &Window) {
        let groups = self.groups_1d(rows * w.channels * w.out_pixels());
        self.dispatch(Kernel::Maxpool, &[x, y, argmax], &window_params(rows, w), groups);
    }

    fn maxpool_backward(
        &mut self,
        dy: &GpuBuf,
        argmax: &GpuBuf,
        dx: &GpuBuf,
        rows: usize,
        w: &Window,
    ) {
        let groups = self.groups_1d(rows * w.in_len());
        self.dispatch(Kernel::MaxpoolBackward, &[dy, argmax, dx], &window_params(rows, w), groups);
    }

    fn avgpool(&mut self, x: &GpuBuf, y: &GpuBuf, rows: usize, w: &Window) {
        let groups = self.groups_1d(rows * w.channels * w.out_pixels());
        self.dispatch(Kernel::Avgpool, &[x, y], &window_params(rows, w), groups);
    }

    fn avgpool_backward(&mut self, dy: &GpuBuf, dx: &GpuBuf, rows: usize, w: &Window) {
        let groups = self.groups_1d(rows * w.in_len());
        self.dispatch(Kernel::AvgpoolBackward, &[dy, dx], &window_params(rows, w), groups);
    }

    fn batchnorm_stats(
        &mut self,
        x: &GpuBuf,
        saved: &GpuBuf,
        running_mean: &GpuBuf,
        running_var: &GpuBuf,
        shape: Nchw,
        h: &BatchNormHyper,
    ) {
        let p = params::BatchNorm {
            train: h.train as u32,
            eps: h.eps,
            momentum: h.momentum,
            ..batchnorm_params(shape)
        };
        if h.train && p.chunks > 1 {
            // The mean over the spans first, then the squared deviations from it.
            for mode in [0, 1] {
                let p = params::BatchNorm { mode, ..p };
                self.batchnorm_in_spans(x, x, saved, [running_mean, running_var], shape, &p);
            }
            return;
        }
        let groups = [shape.channels as u32, 1, 1];
        self.dispatch(Kernel::BatchnormStats, &[x, saved, running_mean, running_var], &p, groups);
    }

    fn batchnorm_forward(
        &mut self,
        x: &GpuBuf,
        saved: &GpuBuf,
        gamma: &GpuBuf,
        beta: &GpuBuf,
        y: &GpuBuf,
        shape: Nchw,
    ) {
        let p = batchnorm_params(shape);
        let groups = self.groups_1d(shape.len());
        self.dispatch(Kernel::BatchnormForward, &[x, saved, gamma, beta, y], &p, groups);
    }

    fn batchnorm_backward_reduce(
        &mut self,
        x: &GpuBuf,
        dy: &GpuBuf,
        saved: &GpuBuf,
        grad_gamma: &GpuBuf,
        grad_beta: &GpuBuf,
        shape: Nchw,
    ) {
        let p = batchnorm_params(shape);
        if p.chunks > 1 {
            let p = params::BatchNorm { mode: 2, ..p };
            self.batchnorm_in_spans(x, dy, saved, [grad_gamma, grad_beta], shape, &p);
            return;
        }
        let groups = [shape.channels as u32, 1, 1];
        self.dispatch(
            Kernel::BatchnormBackwardReduce,
            &[x, dy, saved, grad_gamma, grad_beta],
            &p,
            groups,
        );
    }

    fn batchnorm_backward(
        &mut self,
        x: &GpuBuf,
        dy: &GpuBuf,
        saved: &GpuBuf,
        gamma: &GpuBuf,
        grad_gamma: &GpuBuf,
        grad_beta: &GpuBuf,
        dx: &GpuBuf,
        shape: Nchw,
    ) {
        let p = batchnorm_params(shape);
        let groups = self.groups_1d(shape.len());
        self.dispatch(
            Kernel::BatchnormBackward,
            &[x, dy, saved, gamma, grad_gamma, grad_beta, dx],
            &p,
            groups,
        );
    }

    fn dropout(&mut self, x: &GpuBuf, len: usize, seed: u32, p: f32) {
        let params = params::Dropout {
            len: len as u32,
            seed,
            threshold: (p as f64 * 4_294_967_296.0).min(4_294_967_295.0) as u32,
            scale: 1.0 / (1.0 - p),
            ..Default::default()
        };
        let groups = self.groups_1d(len);
        self.dispatch(Kernel::Dropout, &[x], &params, groups);
    }

    fn relu_backward(&mut self, grad: &GpuBuf, activation: &GpuBuf, len: usize) {
        let groups = self.groups_1d(len);
        let p = params::Elementwise { len: len as u32, ..Default::default() };
        self.dispatch(Kernel::ReluBackward, &[grad, activation], &p, groups);
    }

    fn bias_grad(&mut self, grad: &GpuBuf, out: &GpuBuf, rows: usize, cols: usize) {
        // Columns of 64 across x and chunks of rows across y, so neither a long column (a conv's
        // batch × pixels) nor a narrow layer runs on one workgroup; with several chunks, a
        // second `bias_grad` over the chunks' sums (one chunk of `chunks` rows) adds them up.
        let chunk = bias_grad_chunk(self.class.software, rows);
        let chunks = rows.div_ceil(chunk).max(1);
        let col_groups = cols.div_ceil(64) as u32;
        let p = params::Reduce {
            rows: rows as u32,
            cols: cols as u32,
            chunk: chunk as u32,
            ..Default::default()
        };
        if chunks == 1 {
            self.dispatch(Kernel::BiasGrad, &[grad, out], &p, [col_groups, 1, 1]);
        } else {
            let scratch = self.scratch(chunks * cols);
            self.dispatch(Kernel::BiasGrad, &[grad, &scratch], &p, [col_groups, chunks as u32, 1]);
            let p = params::Reduce { rows: chunks as u32, chunk: chunks as u32, ..p };
            self.dispatch(Kernel::BiasGrad, &[&scratch, out], &p, [col_groups, 1, 1]);
        }
    }

    fn softmax_xent(
        &mut self,
        logits: &GpuBuf,
        labels: &GpuBuf,
        grad: &GpuBuf,
        stats: &GpuBuf,
        rows: usize,
        cols: usize,
        smoothing: f32,
    ) {
        if rows == 0 {
            return;
        }
        // A thread per row across as many workgroups as the batch needs; with more than one,
        // their sums meet in the scratch and one more dispatch adds them into stats.
        let groups = rows.div_ceil(256);
        let p = params::Loss {
            rows: rows as u32,
            cols: cols as u32,
            groups: groups as u32,
            partial: (groups > 1) as u32,
            smoothing,
            ..Default::default()
        };
        let grid = [groups as u32, 1, 1];
        if groups == 1 {
            self.dispatch(Kernel::SoftmaxXent, &[logits, labels, grad, stats], &p, grid);
        } else {
            let scratch = self.scratch(2 * groups);
            self.dispatch(Kernel::SoftmaxXent, &[logits, labels, grad, &scratch], &p, grid);
            self.dispatch(Kernel::LossSums, &[&scratch, stats], &p, [1, 1, 1]);
        }
    }

    fn sgd_update(&mut self, p: &GpuBuf, g: &GpuBuf, vel: &GpuBuf, len: usize, h: &SgdHyper) {
        let params = params::Sgd {
            len: len as u32,
            nesterov: h.nesterov as u32,
            first_step: h.first_step as u32,
            lr: h.lr,
            momentum: h.momentum,
            weight_decay: h.weight_decay,
            ..Default::default()
        };
        let groups = self.groups_1d(len);
        self.dispatch(Kernel::SgdUpdate, &[p, g, vel], &params, groups);
    }

    fn adam_update(
        &mut self,
        p: &GpuBuf,
        g: &GpuBuf,
        m: &GpuBuf,
        v: &GpuBuf,
        len: usize,
        h: &AdamHyper,
    ) {
        let params = params::Adam {
            len: len as u32,
            decoupled: h.decoupled as u32,
            lr: h.lr,
            beta1: h.beta1,
            beta2: h.beta2,
            eps: h.eps,
            weight_decay: h.weight_decay,
            bias_correction1: h.bias_correction1,
            bias_correction2: h.bias_correction2,
            ..Default::default()
        };
        let groups = self.groups_1d(len);
        self.dispatch(Kernel::AdamUpdate, &[p, g, m, v], &params, groups);
    }

    fn rmsprop_update(
        &mut self,
        p: &GpuBuf,
        g: &GpuBuf,
        sq: &GpuBuf,
        vel: &GpuBuf,
        len: usize,
        h: &RmspropHyper,
    ) {
        let params = params::Rmsprop {
            len: len as u32,
            lr: h.lr,
            alpha: h.alpha,
            eps: h.eps,
            weight_decay: h.weight_decay,
            momentum: h.momentum,
            ..Default::default()
        };
        let groups = self.groups_1d(len);
        self.dispatch(Kernel::RmspropUpdate, &[p, g, sq, vel], &params, groups);
    }
}
