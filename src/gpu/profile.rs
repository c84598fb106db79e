//! GPU time per kernel from timestamp queries (`train --profile`, `steepest bench`): each
//! dispatch runs in a compute pass of its own with a timestamp at its start and end; after each
//! submit the times are resolved, read back and added up per kernel and workgroup grid.

use std::collections::HashMap;

use serde::Serialize;

use super::kernels::Kernel;

/// One kernel's share of the profiled work, and how it splits by workgroup grid (which tells a
/// matmul's shapes apart: a conv's skinny weight gradient from a Linear's).
#[derive(Clone, Debug, Serialize)]
pub struct KernelTime {
    pub kernel: &'static str,
    pub dispatches: u64,
    pub seconds: f64,
    pub by_grid: Vec<GridTime>,
}

/// The dispatches of one kernel over one workgroup grid.
#[derive(Clone, Debug, Serialize)]
pub struct GridTime {
    pub groups: [u32; 3],
    pub dispatches: u64,
    pub seconds: f64,
}

pub struct Profiler {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    readback: wgpu::Buffer,
    capacity: usize,
    /// Seconds per timestamp tick.
    period: f64,
    totals: HashMap<(Kernel, [u32; 3]), (u64, f64)>,
}

impl Profiler {
    /// Room for `dispatches` timed dispatches per submit.
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue, dispatches: usize) -> Self {
        let count = 2 * dispatches as u32;
        let bytes = 8 * count as u64;
        Profiler {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count,
            }),
            resolved: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("resolved timestamps"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            readback: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamp readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            capacity: dispatches,
            period: queue.get_timestamp_period() as f64 * 1e-9,
            totals: HashMap::new(),
        }
    }

    /// The timestamp writes of the pass that holds the `n`th dispatch of this submit.
    pub fn writes(&self, n: usize) -> wgpu::ComputePassTimestampWrites<'_> {
        let n = n.min(self.capacity - 1) as u32;
        wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(2 * n),
            end_of_pass_write_index: Some(2 * n + 1),
        }
    }

    /// Records the copy of `dispatches` dispatches' timestamps to the readback buffer.
    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder, dispatches: usize) {
        let count = 2 * dispatches.min(self.capacity) as u32;
        if count == 0 {
            return;
        }
        encoder.resolve_query_set(&self.queries, 0..count, &self.resolved, 0);
        encoder.copy_buffer_to_buffer(&self.resolved, 0, &self.readback, 0, 8 * count as u64);
    }

    /// Waits for the submit and adds each dispatch's time to its kernel and grid.
    pub fn collect(&mut self, device: &wgpu::Device, kernels: &[(Kernel, [u32; 3])]) {
        let n = kernels.len().min(self.capacity);
        if n == 0 {
            return;
        }
        let slice = self.readback.slice(..16 * n as u64);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        if device.poll(wgpu::PollType::wait_indefinitely()).is_err() {
            return;
        }
        if let Ok(view) = slice.get_mapped_range() {
            let ticks: &[u64] = bytemuck::cast_slice(&view);
            for (i, k) in kernels.iter().take(n).enumerate() {
                let dt = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * self.period;
                let e = self.totals.entry(*k).or_insert((0, 0.0));
                e.0 += 1;
                e.1 += dt;
            }
        }
        self.readback.unmap();
    }

    /// Per kernel, largest total first (and within each, per grid, largest first).
    pub fn report(&self) -> Vec<KernelTime> {
        let mut per_kernel: HashMap<Kernel, KernelTime> = HashMap::new();
        for (&(kernel, groups), &(dispatches, seconds)) in &self.totals {
            let k = per_kernel.entry(kernel).or_insert_with(|| KernelTime {
                kernel: kernel.label(),
                dispatches: 0,
                seconds: 0.0,
                by_grid: Vec::new(),
            });
            k.dispatches += dispatches;
            k.seconds += seconds;
            k.by_grid.push(GridTime { groups, dispatches, seconds });
        }
        let mut out: Vec<KernelTime> = per_kernel.into_values().collect();
        for k in &mut out {
            k.by_grid.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        }
        out.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        out
    }
}
