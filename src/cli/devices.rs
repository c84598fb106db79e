//! `steepest devices`.

use steepest::gpu::context::{self, Choice};
use steepest::Result;

pub fn run() -> Result<()> {
    let adapters = context::adapters(wgpu::Backends::all());
    let reports: Vec<_> = adapters.iter().map(context::report).collect();
    if reports.is_empty() {
        println!("wgpu found no GPU adapter: steepest trains on the CPU (--device cpu, or auto).");
        println!("On Linux without a GPU, Mesa's software Vulkan driver (apt-get install mesa-vulkan-drivers libvulkan1) gives --device gpu an adapter.");
        return Ok(());
    }
    let gpu_pick = context::pick(&reports, Choice::AnyAdapter, None);
    let auto_pick = context::pick(&reports, Choice::HardwareOnly, None);
    for (i, r) in reports.iter().enumerate() {
        let mut marks = Vec::new();
        if Some(i) == gpu_pick {
            marks.push("--device gpu");
        }
        if Some(i) == auto_pick {
            marks.push("--device auto");
        }
        let mark =
            if marks.is_empty() { String::new() } else { format!("  <= {}", marks.join(", ")) };
        println!("[{i}] {}{mark}", r.name);
        println!(
            "    backend {}, type {}{}",
            r.backend,
            r.device_type,
            if r.is_software { " (software)" } else { "" }
        );
        println!("    driver {}", if r.driver.is_empty() { "(not reported)" } else { &r.driver });
        println!(
            "    compute shaders {}, max storage binding {} MiB, max buffer {} MiB, \
             workgroups/dim {}, invocations/workgroup {}, workgroup memory {} KiB",
            if r.has_compute { "yes" } else { "no" },
            r.max_storage_buffer_binding_size >> 20,
            r.max_buffer_size >> 20,
            r.max_compute_workgroups_per_dimension,
            r.max_compute_invocations_per_workgroup,
            r.max_compute_workgroup_storage_size >> 10
        );
    }
    if auto_pick.is_none() {
        println!("--device auto uses the CPU here: the only adapters are software ones.");
    }
    Ok(())
}
