//! Finding adapters and opening a device: the one place that talks to wgpu's instance.

use crate::{Error, Result};

/// One adapter as `steepest devices` shows it.
#[derive(Clone, Debug)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub is_software: bool,
    pub has_compute: bool,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_storage_size: u32,
}

/// How `--device` chooses among adapters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// `--device auto`: a real GPU only; software adapters (lavapipe, WARP) lose to the CPU path.
    HardwareOnly,
    /// `--device gpu`: the best adapter there is, a software one if it is the only one.
    AnyAdapter,
}

/// An instance over `backends`. `WGPU_BACKEND` still applies, so a user can force e.g. `gl`.
pub fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc.with_env())
}

/// Every adapter of the given backends.
pub fn adapters(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    pollster::block_on(instance(backends).enumerate_adapters(backends))
}

/// The adapters worth choosing from: the native APIs (Vulkan, Metal, DX12) first; GL only when
/// none of them has an adapter, since probing GL through EGL is slow and noisy on headless Linux.
fn candidate_adapters() -> Vec<wgpu::Adapter> {
    let native = adapters(wgpu::Backends::PRIMARY);
    if native.iter().any(|a| report(a).has_compute) {
        native
    } else {
        adapters(wgpu::Backends::all())
    }
}

pub fn report(adapter: &wgpu::Adapter) -> AdapterReport {
    let info = adapter.get_info();
    let limits = adapter.limits();
    let driver = match (info.driver.is_empty(), info.driver_info.is_empty()) {
        (true, _) => info.driver_info.clone(),
        (false, true) => info.driver.clone(),
        (false, false) => format!("{} {}", info.driver, info.driver_info),
    };
    AdapterReport {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver,
        is_software: info.device_type == wgpu::DeviceType::Cpu,
        has_compute: adapter
            .get_downlevel_capabilities()
            .flags
            .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS),
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_buffer_size: limits.max_buffer_size,
        max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
    }
}

/// Lower is better: discrete, integrated, virtual, other, software; native APIs before GL.
fn rank(r: &AdapterReport) -> (u8, u8) {
    let kind = match r.device_type.as_str() {
        "DiscreteGpu" => 0,
        "IntegratedGpu" => 1,
        "VirtualGpu" => 2,
        "Cpu" => 4,
        _ => 3,
    };
    (kind, (r.backend == "Gl") as u8)
}

/// The index of the adapter that `choice` (and `--adapter` when given) picks, if any.
pub fn pick(reports: &[AdapterReport], choice: Choice, name_filter: Option<&str>) -> Option<usize> {
    let filter = name_filter.map(str::to_lowercase);
    reports
        .iter()
        .enumerate()
        .filter(|(_, r)| r.has_compute)
        .filter(|(_, r)| choice == Choice::AnyAdapter || !r.is_software)
        .filter(|(_, r)| filter.as_ref().is_none_or(|f| r.name.to_lowercase().contains(f)))
        .min_by_key(|(_, r)| rank(r))
        .map(|(i, _)| i)
}

/// Finds the adapter for `choice`, or explains why there is none.
pub fn select(choice: Choice, name_filter: Option<&str>) -> Result<Option<wgpu::Adapter>> {
    let all = candidate_adapters();
    let reports: Vec<_> = all.iter().map(report).collect();
    match pick(&reports, choice, name_filter) {
        Some(i) => Ok(Some(all[i].clone())),
        None if name_filter.is_some() => {
            let names: Vec<_> =
                reports.iter().map(|r| format!("{} ({})", r.name, r.backend)).collect();
            Err(Error::config(
                "--adapter",
                format!(
                    "no adapter with compute shaders matches {:?}; found: {}",
                    name_filter.unwrap_or_default(),
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                ),
            ))
        }
        None => Ok(None),
    }
}

/// Opens the device with the adapter's real limits (not WebGPU's defaults), so large models and
/// batches can use what the hardware has.
pub fn open(adapter: &wgpu::Adapter) -> Result<(wgpu::Device, wgpu::Queue)> {
    let desc = wgpu::DeviceDescriptor {
        label: Some("steepest"),
        // Timestamps, where the adapter has them, for `--profile` and `steepest bench`.
        required_features: adapter.features() & wgpu::Features::TIMESTAMP_QUERY,
        required_limits: adapter.limits(),
        ..Default::default()
    };
    pollster::block_on(adapter.request_device(&desc))
        .map_err(|e| Error::Gpu(format!("could not open {}: {e}", adapter.get_info().name)))
}
