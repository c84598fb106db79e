//! The recorder: the GPU backend's device, buffers and command list. Ops (src/gpu/mod.rs) call
//! `dispatch`, which records a kernel over its buffers with its params in a fresh slot of one
//! uniform "params arena"; `submit_recorded` encodes the whole list into one command encoder and
//! submits it once, after one write of the arena. Bind groups depend only on the buffers they
//! bind, so they are created the first time and reused on every later step.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::kernels::{Kernel, Pipelines};
use super::matmul::{self, AdapterClass, MatmulVariant};
use super::{context, profile};
use crate::backend::MatmulForm;
use crate::{Error, Result};

/// Bytes per params slot: WebGPU's largest allowed `min_uniform_buffer_offset_alignment`.
const SLOT: usize = 256;
/// Slots per submit before the list is flushed early (a step of a deep model still fits).
const SLOTS: usize = 512;
const WORKGROUP: usize = 256;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A GPU tensor: a storage buffer and its length in elements (bytes for pixel buffers); or a
/// view of `len` f32s from byte `offset` of an arena's buffer (see `alloc_arena`), bound as
/// that range alone.
#[derive(Clone, Debug)]
pub struct GpuBuf {
    id: u64,
    pub buffer: wgpu::Buffer,
    pub len: usize,
    pub offset: u64,
    pub view: bool,
}

impl GpuBuf {
    pub(super) fn whole(buffer: wgpu::Buffer, len: usize) -> Self {
        GpuBuf { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), buffer, len, offset: 0, view: false }
    }

    /// A view of `len` f32s from float `start` of `self`'s buffer.
    pub(super) fn view_of(&self, start: usize, len: usize) -> Self {
        GpuBuf {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            buffer: self.buffer.clone(),
            len,
            offset: (start * 4) as u64,
            view: true,
        }
    }

    /// What a kernel binds: the whole buffer, or the view's range rounded up to whole vec4s
    /// (arena slots are padded to at least that, see `alloc_arena`).
    fn binding(&self) -> wgpu::BindingResource<'_> {
        if !self.view {
            return self.buffer.as_entire_binding();
        }
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new(((self.len * 4).max(16).div_ceil(16) * 16) as u64),
        })
    }
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
    /// Bytes written from the host into buffers (uploads), kernel params not included.
    pub bytes_written: u64,
    /// Bytes of kernel params uploaded (one write of the params arena per submit).
    pub params_bytes_written: u64,
}

pub(super) enum Command {
    Dispatch {
        kernel: Kernel,
        bind_group: wgpu::BindGroup,
        slot: u32,
        groups: [u32; 3],
    },
    Copy {
        src: wgpu::Buffer,
        src_offset: u64,
        dst: wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    },
    /// `size` bytes from `offset`, or to the end when `None`.
    Clear {
        buffer: wgpu::Buffer,
        offset: u64,
        size: Option<u64>,
    },
}

pub struct GpuBackend {
    pub(super) device: wgpu::Device,
    pub(super) queue: wgpu::Queue,
    pub(super) info: wgpu::AdapterInfo,
    pub(super) limits: wgpu::Limits,
    pub(super) pipelines: Pipelines,
    pub(super) params: wgpu::Buffer,
    pub(super) params_host: Vec<u8>,
    pub(super) slots_used: usize,
    pub(super) commands: Vec<Command>,
    pub(super) bind_groups: HashMap<(Kernel, [u64; 8]), wgpu::BindGroup>,
    pub(super) staging: Option<wgpu::Buffer>,
    /// Partial sums of split-K matmuls and chunked column sums, grown to the largest need.
    pub(super) scratch: Option<GpuBuf>,
    /// Conv weights padded to the im2col width (see `conv.rs`), grown likewise.
    pub(super) conv_scratch: Option<GpuBuf>,
    /// byte / 255 for every byte, computed by the CPU twin (see `pixels_to_f32` in the WGSL).
    pub(super) pixel_values: GpuBuf,
    /// Bound where a kernel's optional input is absent (a matmul's epilogue bias).
    pub(super) placeholder: GpuBuf,
    pub(super) class: AdapterClass,
    pub(super) forced_matmul: Option<MatmulVariant>,
    /// Per-kernel GPU time from timestamp queries, when profiling is on.
    pub(super) profiler: Option<profile::Profiler>,
    pub(super) counters: GpuCounters,
}

impl GpuBackend {
    /// Opens `adapter`, compiles every kernel and creates the params arena.
    pub fn new(adapter: &wgpu::Adapter) -> Result<Self> {
        let (device, queue) = context::open(adapter)?;
        let limits = device.limits();
        let class = AdapterClass::new(&adapter.get_info(), &limits);
        let pipelines = Pipelines::new(&device, class.software);
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
        let pixel_values = GpuBuf::whole(table, 256);
        let placeholder = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("placeholder"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let placeholder = GpuBuf::whole(placeholder, 4);
        // For comparing kernels on one's own adapter (`steepest bench` times each anyway).
        let forced_matmul = match std::env::var("STEEPEST_MATMUL") {
            Ok(v) => Some(MatmulVariant::parse(&v).ok_or_else(|| {
                Error::config("STEEPEST_MATMUL", format!("{v:?}; expected tiled, register or wide"))
            })?),
            Err(_) => None,
        };
        Ok(GpuBackend {
            pixel_values,
            placeholder,
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
            forced_matmul,
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
        self.submit_recorded();
        self.profiler = Some(profile::Profiler::new(&self.device, &self.queue, SLOTS));
        true
    }

    /// Stops profiling; the GPU time per kernel since `start_profiling`, largest first, each
    /// split by workgroup grid.
    pub fn stop_profiling(&mut self) -> Vec<profile::KernelTime> {
        self.submit_recorded();
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

    /// Caps the split-K scratch at `floats` and each K range at `k_range` (`None`: the
    /// adapter's own), so that plans run as several passes one after another (for tests of
    /// that path at small shapes).
    pub fn limit_split_scratch(&mut self, limits: Option<(usize, usize)>) {
        let own = self.adapter_class().scratch_floats;
        (self.class.scratch_floats, self.class.k_range_cap) = limits.unwrap_or((own, usize::MAX));
    }

    /// Plans kernels (matmul variants and splits, `bias_grad` chunks) as for a software adapter
    /// or a discrete GPU (`None`: as the adapter is), so that tests on lavapipe reach the plans
    /// a real GPU runs.
    pub fn plan_as_software(&mut self, software: Option<bool>) {
        let own = self.adapter_class();
        (self.class.software, self.class.target_groups) = match software {
            None => (own.software, own.target_groups),
            Some(true) => (true, AdapterClass::software_groups()),
            Some(false) => (false, matmul::DISCRETE_GROUPS),
        };
    }

    /// The adapter's own plan class, before any test override.
    fn adapter_class(&self) -> AdapterClass {
        AdapterClass::new(&self.info, &self.limits)
    }

    /// The split-K scratch, at least `floats` long.
    pub(super) fn scratch(&mut self, floats: usize) -> GpuBuf {
        let mut slot = self.scratch.take();
        let s = self.grown(&mut slot, floats, "split scratch");
        self.scratch = slot;
        s
    }

    /// The padded conv weights' scratch, at least `floats` long.
    pub(super) fn conv_scratch(&mut self, floats: usize) -> GpuBuf {
        let mut slot = self.conv_scratch.take();
        let s = self.grown(&mut slot, floats, "conv weight scratch");
        self.conv_scratch = slot;
        s
    }

    /// `slot`'s buffer, replaced by a larger one when it holds fewer than `floats`. Callers keep
    /// their sizes within the binding limit (a plan's scratch, a layer's weights), so creating
    /// it cannot fail for lack of room.
    pub(super) fn grown(&mut self, slot: &mut Option<GpuBuf>, floats: usize, what: &str) -> GpuBuf {
        if let Some(s) = slot {
            if s.len >= floats {
                return s.clone();
            }
        }
        // At least 1 MiB and double the last: a step that asks for a small scratch first and a
        // larger one later (a bias gradient's chunks, then a weight gradient's splits) grows it
        // once, not every step, so later steps create no bind group either.
        let cap = (matmul::max_binding_bytes(&self.limits) / 4) as usize;
        let headroom = (1usize << 18).max(slot.as_ref().map_or(0, |s| 2 * s.len)).min(cap);
        // Cached bind groups of the old buffer would keep it alive and never match again.
        if let Some(old) = slot.as_ref().map(|s| s.id) {
            self.bind_groups.retain(|(_, key), _| !key.contains(&old));
        }
        let floats = floats.max(headroom);
        let bytes = (floats * 4).div_ceil(16) * 16;
        self.counters.buffers_created += 1;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: bytes as u64,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let s = GpuBuf::whole(buffer, floats);
        *slot = Some(s.clone());
        s
    }

    /// Waits until every submitted command has finished (for timing).
    pub fn wait(&mut self) {
        self.submit_recorded();
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
    }

    pub(super) fn create_buffer(&mut self, bytes: usize, what: &str) -> Result<GpuBuf> {
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
        // A software adapter's memory is the machine's: a clear error before it runs out.
        if self.info.device_type == wgpu::DeviceType::Cpu {
            if let Some(why) = crate::device::memory_shortfall(Some(size as u64), what) {
                return Err(Error::Gpu(why));
            }
        }
        self.counters.buffers_created += 1;
        // Out of device memory is an error here, not wgpu's uncaptured-error panic.
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: size as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!(
                "{what} needs {size} bytes, but {} is out of memory: {e}",
                self.info.name
            )));
        }
        Ok(GpuBuf::whole(buffer, bytes))
    }

    /// Records one dispatch of `kernel` over `buffers` with `params` in a fresh arena slot.
    pub(super) fn dispatch<P: bytemuck::Pod>(
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
            self.submit_recorded();
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
                        resource: b.binding(),
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
    pub(super) fn groups_1d(&self, len: usize) -> [u32; 3] {
        let groups = len.div_ceil(WORKGROUP);
        let cap = self.limits.max_compute_workgroups_per_dimension as usize;
        if groups <= cap {
            [groups as u32, 1, 1]
        } else {
            [cap as u32, groups.div_ceil(cap) as u32, 1]
        }
    }
    /// Copies `src` to the staging buffer, submits everything recorded, and waits for it.
    pub(super) fn read_back(&mut self, src: &GpuBuf, len: usize) -> Result<Vec<f32>> {
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
        self.commands.push(Command::Copy {
            src: src.buffer.clone(),
            src_offset: src.offset,
            dst: staging.clone(),
            dst_offset: 0,
            size,
        });
        self.submit_recorded();
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

    /// Encodes everything recorded into one command encoder and submits it.
    pub(super) fn submit_recorded(&mut self) {
        if self.commands.is_empty() {
            return;
        }
        if self.slots_used > 0 {
            self.queue.write_buffer(&self.params, 0, &self.params_host[..self.slots_used * SLOT]);
            self.counters.params_bytes_written += (self.slots_used * SLOT) as u64;
        }
        let mut encoder = self.device.create_command_encoder(&Default::default());
        let mut commands = std::mem::take(&mut self.commands);
        let mut timed: Vec<(Kernel, [u32; 3])> = Vec::new();
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
                        timed.push((*kernel, *groups));
                        break;
                    }
                }
                continue;
            }
            match &commands[i] {
                Command::Copy { src, src_offset, dst, dst_offset, size } => {
                    encoder.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, *size);
                }
                Command::Clear { buffer, offset, size } => {
                    encoder.clear_buffer(buffer, *offset, *size)
                }
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

    pub(super) fn write_raw(&mut self, dst: &GpuBuf, data: &[u8]) {
        // queue.write_buffer runs before anything recorded but not yet submitted, so submit
        // first to keep writes in order with the ops (a training step writes before recording).
        self.submit_recorded();
        self.counters.bytes_written += data.len() as u64;
        let aligned = data.len() / 4 * 4;
        if aligned > 0 {
            self.queue.write_buffer(&dst.buffer, dst.offset, &data[..aligned]);
        }
        if aligned < data.len() {
            let mut tail = [0u8; 4];
            tail[..data.len() - aligned].copy_from_slice(&data[aligned..]);
            self.queue.write_buffer(&dst.buffer, dst.offset + aligned as u64, &tail);
        }
    }
}
