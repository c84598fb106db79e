//! The GPU backend: WGSL compute shaders through wgpu.
//!
//! Ops are not run one by one: each call appends a command (a dispatch, a copy or a clear) to a
//! list, and `submit` encodes the whole list into one command encoder and submits it once. Kernel
//! parameters go into slots of one uniform "params arena" (bound with a dynamic offset) that is
//! uploaded with a single write per submit, so bind groups depend only on the buffers they bind,
//! are created the first time they are needed and reused on every later step.

pub mod context;
mod conv;
pub mod kernels;
pub mod matmul;
pub mod profile;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::{
    AdamHyper, Backend, BatchNormHyper, MatmulForm, RmspropHyper, SgdHyper, Window,
};
use crate::{Error, Result};
use kernels::{Kernel, Pipelines};
use matmul::{AdapterClass, MatmulVariant, BIAS_GRAD_CHUNK};

/// Bytes per params slot: WebGPU's largest allowed `min_uniform_buffer_offset_alignment`.
const SLOT: usize = 256;
/// Slots per submit before the list is flushed early (a step of a deep model still fits).
const SLOTS: usize = 512;
const WORKGROUP: usize = 256;
const MATMUL_TILE: usize = 64;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A GPU tensor: a storage buffer and its length in elements (bytes for pixel buffers).
#[derive(Clone, Debug)]
pub struct GpuBuf {
    id: u64,
    pub buffer: wgpu::Buffer,
    pub len: usize,
}

/// What the backend has created and done, for checking that a training step allocates nothing
/// and reads nothing back (see tests/gpu_step.rs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuCounters {
    pub buffers_created: u64,
    pub bind_groups_created: u64,
    pub submits: u64,
    pub readbacks: u64,
    pub dispatches: u64,
}

enum Command {
    Dispatch { kernel: Kernel, bind_group: wgpu::BindGroup, slot: u32, groups: [u32; 3] },
    Copy { src: wgpu::Buffer, dst: wgpu::Buffer, size: u64 },
    Clear { buffer: wgpu::Buffer },
}

pub struct GpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    pipelines: Pipelines,
    params: wgpu::Buffer,
    params_host: Vec<u8>,
    slots_used: usize,
    commands: Vec<Command>,
    bind_groups: HashMap<(Kernel, [u64; 8]), wgpu::BindGroup>,
    staging: Option<wgpu::Buffer>,
    /// Partial sums of split-K matmuls and chunked column sums, grown to the largest need.
    scratch: Option<GpuBuf>,
    /// Conv weights padded to the im2col width (see `conv.rs`), grown likewise.
    conv_scratch: Option<GpuBuf>,
    /// byte / 255 for every byte, computed by the CPU twin (see `pixels_to_f32` in the WGSL).
    pixel_values: GpuBuf,
    class: AdapterClass,
    forced_matmul: Option<MatmulVariant>,
    /// Per-kernel GPU time from timestamp queries, when profiling is on.
    profiler: Option<profile::Profiler>,
    counters: GpuCounters,
}

/// `MatmulParams` in shaders/matmul_common.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MatmulParams {
    m: u32,
    k: u32,
    n: u32,
    k_begin: u32,
    k_chunk: u32,
    accumulate: u32,
    _pad: [u32; 2],
}

/// `Params` in shaders/reduce.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ReduceParams {
    rows: u32,
    cols: u32,
    chunk: u32,
    accumulate: u32,
}

impl GpuBackend {
    /// Opens `adapter`, compiles every kernel and creates the params arena.
    pub fn new(adapter: &wgpu::Adapter) -> Result<Self> {
        let (device, queue) = context::open(adapter)?;
        let limits = device.limits();
        let class = AdapterClass::new(&adapter.get_info(), &limits);
        let pipelines = Pipelines::new(&device);
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params arena"),
            size: (SLOT * SLOTS) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut pixel_values = vec![0.0f32; 256];
        crate::cpu::elementwise::pixels_to_f32(&(0..=255u8).collect::<Vec<_>>(), &mut pixel_values);
        let table = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pixel values"),
            size: 1024,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        queue.write_buffer(&table, 0, bytemuck::cast_slice(&pixel_values));
        let pixel_values =
            GpuBuf { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), buffer: table, len: 256 };
        Ok(GpuBackend {
            pixel_values,
            device,
            queue,
            info: adapter.get_info(),
            limits,
            pipelines,
            params,
            params_host: vec![0; SLOT * SLOTS],
            slots_used: 0,
            commands: Vec::new(),
            bind_groups: HashMap::new(),
            staging: None,
            scratch: None,
            conv_scratch: None,
            class,
            // For comparing kernels on one's own adapter (`steepest bench` times each anyway).
            forced_matmul: std::env::var("STEEPEST_MATMUL")
                .ok()
                .and_then(|v| MatmulVariant::parse(&v)),
            profiler: None,
            counters: GpuCounters::default(),
        })
    }

    /// The best adapter for `choice` opened as a backend, or `None` when there is no adapter.
    pub fn open(choice: context::Choice, name_filter: Option<&str>) -> Result<Option<Self>> {
        match context::select(choice, name_filter)? {
            Some(adapter) => Ok(Some(Self::new(&adapter)?)),
            None => Ok(None),
        }
    }

    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Times every dispatch from now on with GPU timestamps (each in its own compute pass, and
    /// each submit waits for its times: for measuring, not for training fast). False when the
    /// adapter has no timestamp queries.
    pub fn start_profiling(&mut self) -> bool {
        if !self.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return false;
        }
        self.submit();
        self.profiler = Some(profile::Profiler::new(&self.device, &self.queue, SLOTS));
        true
    }

    /// Stops profiling; the GPU time per kernel since `start_profiling`, largest first.
    pub fn stop_profiling(&mut self) -> Vec<profile::KernelTime> {
        self.submit();
        self.profiler.take().map(|p| p.report()).unwrap_or_default()
    }

    /// Compiles every kernel now (they are otherwise compiled on first use).
    pub fn compile_all_kernels(&mut self) {
        self.pipelines.compile_all();
    }

    pub fn counters(&self) -> GpuCounters {
        self.counters
    }

    /// Runs every matmul with `variant` where its alignment allows (the tiled one elsewhere),
    /// instead of the per-adapter choice: for cross-checks and benchmarks of each variant.
    pub fn force_matmul_variant(&mut self, variant: Option<MatmulVariant>) {
        self.forced_matmul = variant;
    }

    /// The matmul kernel and K split this backend uses for a shape.
    pub fn matmul_plan(
        &self,
        form: MatmulForm,
        m: usize,
        k: usize,
        n: usize,
    ) -> matmul::MatmulPlan {
        matmul::plan(&self.class, self.forced_matmul, form, m, k, n)
    }

    /// The split-K scratch, at least `floats` long.
    fn scratch(&mut self, floats: usize) -> GpuBuf {
        let mut slot = self.scratch.take();
        let s = self.grown(&mut slot, floats, "split scratch");
        self.scratch = slot;
        s
    }

    /// The padded conv weights' scratch, at least `floats` long.
    fn conv_scratch(&mut self, floats: usize) -> GpuBuf {
        let mut slot = self.conv_scratch.take();
        let s = self.grown(&mut slot, floats, "conv weight scratch");
        self.conv_scratch = slot;
        s
    }

    /// `slot`'s buffer, replaced by a larger one when it holds fewer than `floats`. Callers keep
    /// their sizes within the binding limit (a plan's scratch, a layer's weights), so creating
    /// it cannot fail for lack of room.
    fn grown(&mut self, slot: &mut Option<GpuBuf>, floats: usize, what: &str) -> GpuBuf {
        if let Some(s) = slot {
            if s.len >= floats {
                return s.clone();
            }
        }
        let bytes = (floats * 4).div_ceil(16) * 16;
        self.counters.buffers_created += 1;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: bytes as u64,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let s = GpuBuf { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), buffer, len: floats };
        *slot = Some(s.clone());
        s
    }

    /// `out (+)= Σ_s part[s·len..][..len]` over `slices` slices.
    fn sum_splits(
        &mut self,
        part: &GpuBuf,
        out: &GpuBuf,
        len: usize,
        slices: usize,
        accumulate: bool,
    ) {
        let p = ReduceParams {
            rows: 0,
            cols: len as u32,
            chunk: slices as u32,
            accumulate: accumulate as u32,
        };
        let groups = self.groups_1d(len);
        self.dispatch(Kernel::SumSplits, &[part, out], &p, groups);
    }

    /// Waits until every submitted command has finished (for timing).
    pub fn wait(&mut self) {
        self.submit();
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
    }

    fn create_buffer(&mut self, bytes: usize, what: &str) -> Result<GpuBuf> {
        // Whole vec4s, so that kernels that read vec4s see every element.
        let size = bytes.max(16).div_ceil(16) * 16;
        let max_binding = self.limits.max_storage_buffer_binding_size as usize;
        if size > max_binding || size as u64 > self.limits.max_buffer_size {
            return Err(Error::Gpu(format!(
                "{what} needs {size} bytes in one buffer, but {} allows at most {} \
                 (max_storage_buffer_binding_size) and {} (max_buffer_size); \
                 use a smaller --batch-size or narrower layers",
                self.info.name, max_binding, self.limits.max_buffer_size
            )));
        }
        self.counters.buffers_created += 1;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: size as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Ok(GpuBuf { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), buffer, len: bytes })
    }

    /// Records one dispatch of `kernel` over `buffers` with `params` in a fresh arena slot.
    fn dispatch<P: bytemuck::Pod>(
        &mut self,
        kernel: Kernel,
        buffers: &[&GpuBuf],
        params: &P,
        groups: [u32; 3],
    ) {
        let params: &[u8] = bytemuck::bytes_of(params);
        if groups.contains(&0) {
            return;
        }
        if self.slots_used == SLOTS {
            self.submit();
        }
        let slot = self.slots_used;
        self.slots_used += 1;
        self.params_host[slot * SLOT..slot * SLOT + params.len()].copy_from_slice(params);

        let mut key = [0u64; 8];
        for (k, b) in key.iter_mut().zip(buffers) {
            *k = b.id;
        }
        let bind_group = match self.bind_groups.get(&(kernel, key)) {
            Some(bg) => bg.clone(),
            None => {
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &self.params,
                        offset: 0,
                        size: wgpu::BufferSize::new(SLOT as u64),
                    }),
                }];
                for (i, b) in buffers.iter().enumerate() {
                    entries.push(wgpu::BindGroupEntry {
                        binding: i as u32 + 1,
                        resource: b.buffer.as_entire_binding(),
                    });
                }
                let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(kernel.name()),
                    layout: &self.pipelines.get(kernel).layout,
                    entries: &entries,
                });
                self.counters.bind_groups_created += 1;
                self.bind_groups.insert((kernel, key), bg.clone());
                bg
            }
        };
        self.counters.dispatches += 1;
        self.commands.push(Command::Dispatch { kernel, bind_group, slot: slot as u32, groups });
    }

    /// Workgroup counts for `len` threads of 256, folded into 2D past the per-dimension cap.
    fn groups_1d(&self, len: usize) -> [u32; 3] {
        let groups = len.div_ceil(WORKGROUP);
        let cap = self.limits.max_compute_workgroups_per_dimension as usize;
        if groups <= cap {
            [groups as u32, 1, 1]
        } else {
            [cap as u32, groups.div_ceil(cap) as u32, 1]
        }
    }
}

/// A `Window` as the WGSL struct lays it out, with the batch size and output size.
fn window_params(rows: usize, w: &Window) -> [u32; 13] {
    let v = [
        rows,
        w.channels,
        w.height,
        w.width,
        w.kernel_h,
        w.kernel_w,
        w.stride_h,
        w.stride_w,
        w.pad_h,
        w.pad_w,
        w.out_h(),
        w.out_w(),
        w.col_width(),
    ];
    v.map(|x| x as u32)
}

/// Params as the WGSL structs lay them out: four u32 then up to eight f32 (as bits), on the
/// stack: recording an op allocates nothing.
fn params(u: [u32; 4], f: &[f32]) -> [u32; 12] {
    let mut out = [0u32; 12];
    out[..4].copy_from_slice(&u);
    for (o, v) in out[4..].iter_mut().zip(f) {
        *o = v.to_bits();
    }
    out
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
        self.limits.max_compute_workgroups_per_dimension as usize * MATMUL_TILE
    }

    fn alloc(&mut self, len: usize) -> Result<GpuBuf> {
        let mut b = self.create_buffer(len * 4, "tensor")?;
        b.len = len;
        Ok(b)
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
        self.commands.push(Command::Clear { buffer: dst.buffer.clone() });
    }

    fn read(&mut self, src: &GpuBuf, len: usize) -> Result<Vec<f32>> {
        let size = (len * 4) as u64;
        if size == 0 {
            return Ok(Vec::new());
        }
        if self.staging.as_ref().is_none_or(|s| s.size() < size) {
            self.counters.buffers_created += 1;
            self.staging = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback staging"),
                size: size.max(4096),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let staging = self.staging.clone().expect("staging buffer exists");
        self.commands.push(Command::Copy { src: src.buffer.clone(), dst: staging.clone(), size });
        self.submit();
        self.counters.readbacks += 1;

        let slice = staging.slice(..size);
        let (sender, receiver) = futures_intrusive::channel::shared::oneshot_channel();
        slice.map_async(wgpu::MapMode::Read, move |r| sender.send(r).unwrap_or(()));
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for {}: {e}", self.info.name)))?;
        match pollster::block_on(receiver.receive()) {
            Some(Ok(())) => {}
            _ => return Err(Error::Gpu(format!("could not read back from {}", self.info.name))),
        }
        let values = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("mapping the readback buffer: {e}")))?;
            bytemuck::cast_slice::<u8, f32>(&view).to_vec()
        };
        staging.unmap();
        Ok(values)
    }

    fn submit(&mut self) {
        if self.commands.is_empty() {
            return;
        }
        if self.slots_used > 0 {
            self.queue.write_buffer(&self.params, 0, &self.params_host[..self.slots_used * SLOT]);
        }
        let mut encoder = self.device.create_command_encoder(&Default::default());
        let mut commands = std::mem::take(&mut self.commands);
        let mut timed: Vec<Kernel> = Vec::new();
        let mut i = 0;
        while i < commands.len() {
            if let Command::Dispatch { .. } = commands[i] {
                // Consecutive dispatches share one compute pass; wgpu orders them by usage. When
                // profiling, each gets a pass of its own with timestamps at both ends.
                let timestamp_writes = self.profiler.as_ref().map(|p| p.writes(timed.len()));
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes,
                });
                while let Some(Command::Dispatch { kernel, bind_group, slot, groups }) =
                    commands.get(i)
                {
                    pass.set_pipeline(&self.pipelines.compiled(*kernel).pipeline);
                    pass.set_bind_group(0, bind_group, &[slot * SLOT as u32]);
                    pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                    i += 1;
                    if self.profiler.is_some() {
                        timed.push(*kernel);
                        break;
                    }
                }
                continue;
            }
            match &commands[i] {
                Command::Copy { src, dst, size } => {
                    encoder.copy_buffer_to_buffer(src, 0, dst, 0, *size);
                }
                Command::Clear { buffer } => encoder.clear_buffer(buffer, 0, None),
                Command::Dispatch { .. } => unreachable!("handled above"),
            }
            i += 1;
        }
        if let Some(p) = &self.profiler {
            p.resolve(&mut encoder, timed.len());
        }
        self.queue.submit([encoder.finish()]);
        commands.clear();
        self.commands = commands;
        self.slots_used = 0;
        self.counters.submits += 1;
        if let Some(p) = &mut self.profiler {
            p.collect(&self.device, &timed);
        }
    }

    fn pixels_to_f32(&mut self, src: &GpuBuf, dst: &GpuBuf, len: usize) {
        let groups = self.groups_1d(len);
        let table = self.pixel_values.clone();
        self.dispatch(Kernel::PixelsToF32, &[src, dst, &table], &[len as u32, 0, 0, 0], groups);
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
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            self.fill_zero(c);
            return;
        }
        let plan = self.matmul_plan(form, m, k, n);
        let kernel = plan.variant.kernel(form);
        for (first, splits) in plan.passes() {
            let accumulate = first > 0;
            let p = MatmulParams {
                m: m as u32,
                k: k as u32,
                n: n as u32,
                k_begin: (first * plan.k_chunk) as u32,
                k_chunk: plan.k_chunk as u32,
                accumulate: (accumulate && splits == 1) as u32,
                _pad: [0; 2],
            };
            let groups = plan.groups(m, n, splits);
            if splits == 1 {
                self.dispatch(kernel, &[a, b, c], &p, groups);
            } else {
                let scratch = self.scratch(splits * m * n);
                self.dispatch(kernel, &[a, b, &scratch], &p, groups);
                self.sum_splits(&scratch, c, m * n, splits, accumulate);
            }
        }
    }

    fn add_bias(&mut self, x: &GpuBuf, bias: &GpuBuf, rows: usize, cols: usize, relu: bool) {
        let kernel = if relu { Kernel::AddBiasRelu } else { Kernel::AddBias };
        let groups = self.groups_1d(rows * cols);
        let p = [(rows * cols) as u32, cols as u32, 0, 0];
        self.dispatch(kernel, &[x, bias], &p, groups);
    }

    fn normalize(
        &mut self,
        x: &GpuBuf,
        stats: &GpuBuf,
        rows: usize,
        channels: usize,
        pixels: usize,
    ) {
        let len = rows * channels * pixels;
        let groups = self.groups_1d(len);
        self.dispatch(
            Kernel::Normalize,
            &[x, stats],
            &[len as u32, channels as u32, pixels as u32, 0],
            groups,
        );
    }

    fn relu(&mut self, x: &GpuBuf, len: usize) {
        let groups = self.groups_1d(len);
        self.dispatch(Kernel::Relu, &[x], &[len as u32, 0, 0, 0], groups);
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
        let p = [rows as u32, cols as u32, src_width as u32, dst_width as u32];
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
        let groups = self.groups_1d(rows * w.out_pixels() * w.col_width());
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
        rows: usize,
        pixels: usize,
        channels: usize,
        relu: bool,
    ) {
        let flags = relu as u32 | (bias.is_some() as u32) << 1;
        let p = [rows as u32, pixels as u32, channels as u32, flags];
        let groups = self.groups_1d(rows * pixels * channels);
        // Without a bias, z is bound in its place (read-only twice is allowed) and never read.
        self.dispatch(Kernel::ToChannelsFirst, &[z, bias.unwrap_or(z), y], &p, groups);
    }

    fn to_channels_last(
        &mut self,
        y: &GpuBuf,
        z: &GpuBuf,
        rows: usize,
        pixels: usize,
        channels: usize,
    ) {
        let p = [rows as u32, pixels as u32, channels as u32, 0];
        let groups = self.groups_1d(rows * pixels * channels);
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
        rows: usize,
        channels: usize,
        pixels: usize,
        h: &BatchNormHyper,
    ) {
        let p = params(
            [rows as u32, channels as u32, pixels as u32, h.train as u32],
            &[h.eps, h.momentum, 0.0, 0.0],
        );
        let groups = [channels as u32, 1, 1];
        self.dispatch(Kernel::BatchnormStats, &[x, saved, running_mean, running_var], &p, groups);
    }

    fn batchnorm_forward(
        &mut self,
        x: &GpuBuf,
        saved: &GpuBuf,
        gamma: &GpuBuf,
        beta: &GpuBuf,
        y: &GpuBuf,
        rows: usize,
        channels: usize,
        pixels: usize,
    ) {
        let p = params([rows as u32, channels as u32, pixels as u32, 0], &[0.0; 4]);
        let groups = self.groups_1d(rows * channels * pixels);
        self.dispatch(Kernel::BatchnormForward, &[x, saved, gamma, beta, y], &p, groups);
    }

    fn batchnorm_backward_reduce(
        &mut self,
        x: &GpuBuf,
        dy: &GpuBuf,
        saved: &GpuBuf,
        grad_gamma: &GpuBuf,
        grad_beta: &GpuBuf,
        rows: usize,
        channels: usize,
        pixels: usize,
    ) {
        let p = params([rows as u32, channels as u32, pixels as u32, 0], &[0.0; 4]);
        let groups = [channels as u32, 1, 1];
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
        rows: usize,
        channels: usize,
        pixels: usize,
    ) {
        let p = params([rows as u32, channels as u32, pixels as u32, 0], &[0.0; 4]);
        let groups = self.groups_1d(rows * channels * pixels);
        self.dispatch(
            Kernel::BatchnormBackward,
            &[x, dy, saved, gamma, grad_gamma, grad_beta, dx],
            &p,
            groups,
        );
    }

    fn dropout(&mut self, x: &GpuBuf, len: usize, seed: u32, p: f32) {
        let threshold = (p as f64 * 4_294_967_296.0).min(4_294_967_295.0) as u32;
        let bytes = params([len as u32, seed, threshold, 0], &[1.0 / (1.0 - p), 0.0, 0.0, 0.0]);
        let groups = self.groups_1d(len);
        self.dispatch(Kernel::Dropout, &[x], &bytes, groups);
    }

    fn relu_backward(&mut self, grad: &GpuBuf, activation: &GpuBuf, len: usize) {
        let groups = self.groups_1d(len);
        let p = [len as u32, 0, 0, 0];
        self.dispatch(Kernel::ReluBackward, &[grad, activation], &p, groups);
    }

    fn bias_grad(&mut self, grad: &GpuBuf, out: &GpuBuf, rows: usize, cols: usize) {
        // Columns of 64 across x and chunks of rows across y, so neither a long column (a conv's
        // batch × pixels) nor a narrow layer runs on one workgroup; chunks add up in a second pass.
        let chunks = rows.div_ceil(BIAS_GRAD_CHUNK).max(1);
        let groups = [cols.div_ceil(64) as u32, chunks as u32, 1];
        let p = ReduceParams {
            rows: rows as u32,
            cols: cols as u32,
            chunk: BIAS_GRAD_CHUNK as u32,
            accumulate: 0,
        };
        if chunks == 1 {
            self.dispatch(Kernel::BiasGrad, &[grad, out], &p, groups);
        } else {
            let scratch = self.scratch(chunks * cols);
            self.dispatch(Kernel::BiasGrad, &[grad, &scratch], &p, groups);
            self.sum_splits(&scratch, out, cols, chunks, false);
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
    ) {
        let p = [rows as u32, cols as u32, 0, 0];
        let groups = if rows == 0 { [0, 1, 1] } else { [1, 1, 1] };
        self.dispatch(Kernel::SoftmaxXent, &[logits, labels, grad, stats], &p, groups);
    }

    fn sgd_update(&mut self, p: &GpuBuf, g: &GpuBuf, vel: &GpuBuf, len: usize, h: &SgdHyper) {
        let u = [len as u32, h.nesterov as u32, h.first_step as u32, 0];
        let bytes = params(u, &[h.lr, h.momentum, h.weight_decay, 0.0]);
        let groups = self.groups_1d(len);
        self.dispatch(Kernel::SgdUpdate, &[p, g, vel], &bytes, groups);
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
        let u = [len as u32, h.decoupled as u32, 0, 0];
        let f = [
            h.lr,
            h.beta1,
            h.beta2,
            h.eps,
            h.weight_decay,
            h.bias_correction1,
            h.bias_correction2,
            0.0,
        ];
        let groups = self.groups_1d(len);
        self.dispatch(Kernel::AdamUpdate, &[p, g, m, v], &params(u, &f), groups);
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
        let u = [len as u32, 0, 0, 0];
        let f = [h.lr, h.alpha, h.eps, h.weight_decay, h.momentum, 0.0, 0.0, 0.0];
        let groups = self.groups_1d(len);
        self.dispatch(Kernel::RmspropUpdate, &[p, g, sq, vel], &params(u, &f), groups);
    }
}

impl GpuBackend {
    fn write_raw(&mut self, dst: &GpuBuf, data: &[u8]) {
        // queue.write_buffer runs before anything recorded but not yet submitted, so submit
        // first to keep writes in order with the ops (a training step writes before recording).
        self.submit();
        let aligned = data.len() / 4 * 4;
        if aligned > 0 {
            self.queue.write_buffer(&dst.buffer, 0, &data[..aligned]);
        }
        if aligned < data.len() {
            let mut tail = [0u8; 4];
            tail[..data.len() - aligned].copy_from_slice(&data[aligned..]);
            self.queue.write_buffer(&dst.buffer, aligned as u64, &tail);
        }
    }
}
