//! `--device auto|gpu|cpu`: picking a backend at run time. Code that is generic over
//! [`Backend`](crate::backend::Backend) runs through [`with_backend!`](crate::with_backend).

use std::str::FromStr;

use crate::cpu::CpuBackend;
use crate::gpu::context::Choice;
use crate::gpu::GpuBackend;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A real GPU if there is one, else the CPU (with a one-line notice).
    Auto,
    /// Any adapter, a software one included; an error if there is none.
    Gpu,
    Cpu,
}

impl FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "gpu" => Ok(DeviceChoice::Gpu),
            "cpu" => Ok(DeviceChoice::Cpu),
            _ => Err(Error::config(
                "--device",
                format!("unknown device {s:?}; expected auto, gpu or cpu"),
            )),
        }
    }
}

/// An opened device of either kind.
pub enum AnyBackend {
    Cpu(CpuBackend),
    Gpu(Box<GpuBackend>),
}

impl AnyBackend {
    /// Opens the device `choice` asks for. `notice` receives the line `auto` prints when it falls
    /// back to the CPU, and the warning that `gpu` took a software adapter.
    pub fn open(
        choice: DeviceChoice,
        adapter: Option<&str>,
        notice: &mut dyn FnMut(&str),
    ) -> Result<Self> {
        match choice {
            DeviceChoice::Cpu => Ok(AnyBackend::Cpu(CpuBackend::new())),
            DeviceChoice::Gpu => match GpuBackend::open(Choice::AnyAdapter, adapter)? {
                Some(gpu) => {
                    if gpu.adapter_info().device_type == wgpu::DeviceType::Cpu {
                        notice(&format!(
                            "{} is a software adapter (the CPU emulating a GPU): training runs \
                             correctly but several times slower than --device cpu",
                            gpu.adapter_info().name
                        ));
                    }
                    Ok(AnyBackend::Gpu(Box::new(gpu)))
                }
                None => Err(Error::config(
                    "--device",
                    "gpu was asked for but wgpu found no adapter with compute shaders \
                     (run `steepest devices`; on Linux without a GPU, install Mesa's lavapipe: \
                     apt-get install mesa-vulkan-drivers libvulkan1); use --device cpu or auto",
                )),
            },
            DeviceChoice::Auto => match GpuBackend::open(Choice::HardwareOnly, adapter)? {
                Some(gpu) => Ok(AnyBackend::Gpu(Box::new(gpu))),
                None => {
                    notice("no hardware GPU adapter found; training on the CPU (--device gpu takes a software adapter)");
                    Ok(AnyBackend::Cpu(CpuBackend::new()))
                }
            },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            AnyBackend::Cpu(_) => format!("cpu ({} threads)", cpu_threads()),
            AnyBackend::Gpu(g) => {
                let i = g.adapter_info();
                format!("gpu: {} ({:?}, {:?})", i.name, i.backend, i.device_type)
            }
        }
    }
}

/// Threads the CPU path uses (it lives with the CPU backend; named here for the CLI).
pub use crate::cpu::parallel::threads as cpu_threads;

/// Runs `$body` with `$b` bound to the concrete backend inside an [`AnyBackend`].
#[macro_export]
macro_rules! with_backend {
    ($any:expr, $b:ident => $body:expr) => {
        match $any {
            $crate::device::AnyBackend::Cpu($b) => $body,
            $crate::device::AnyBackend::Gpu($b) => {
                let $b = &mut **$b;
                $body
            }
        }
    };
}

/// Bytes of memory this machine can still hand out (Linux: `MemAvailable` in /proc/meminfo),
/// or `None` where that is not known.
pub fn memory_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Why `bytes` (`None`: more than can be counted) would not fit in the memory available, with
/// a quarter kept back, or `None` when they fit (or availability is unknown). Callers check this
/// before allocating and wrap it in an error naming their file or flag, so that a model, batch
/// or file too large for the machine is a clear error, not an abort.
pub fn memory_shortfall(bytes: Option<u64>, what: &str) -> Option<String> {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    match (bytes, memory_available()) {
        (None, _) => Some(format!("{what} needs more memory than can be counted")),
        (Some(b), Some(a)) if b > a / 4 * 3 => Some(format!(
            "{what} needs {:.1} GiB, but this machine has {:.1} GiB available",
            gib(b),
            gib(a)
        )),
        _ => None,
    }
}
