//! The WGSL entry points and their pipelines, compiled once when the GPU backend starts.

/// How a kernel uses one of its storage bindings (binding 1 onwards; 0 is the params uniform).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

use Access::{Read, ReadWrite};

/// Each shader file with `shaders/common.wgsl` (shared helpers and structs) in front.
macro_rules! shader {
    ($($file:literal),+) => {
        concat!(include_str!("../../shaders/common.wgsl"), $(include_str!(concat!("../../shaders/", $file))),+)
    };
}

pub const MATMUL_WGSL: &str = shader!("matmul_common.wgsl", "matmul.wgsl");
pub const MATMUL_REGISTER_WGSL: &str = shader!("matmul_common.wgsl", "matmul_register.wgsl");
pub const MATMUL_WIDE_WGSL: &str = shader!("matmul_common.wgsl", "matmul_wide.wgsl");
pub const ELEMENTWISE_WGSL: &str = shader!("elementwise.wgsl");
pub const REDUCE_WGSL: &str = shader!("reduce.wgsl");
pub const LOSS_WGSL: &str = shader!("loss.wgsl");
pub const OPTIM_WGSL: &str = shader!("optim.wgsl");
pub const CONV_WGSL: &str = shader!("conv.wgsl");
pub const POOL_WGSL: &str = shader!("pool.wgsl");
pub const BATCHNORM_WGSL: &str = shader!("batchnorm.wgsl");
pub const GATHER_WGSL: &str = shader!("gather.wgsl");

/// The one kernel table: each row names a kernel, its shader, its WGSL entry point and its
/// storage bindings in order. The enum, `Kernel::ALL` (whose order indexes the compiled
/// pipelines) and `Kernel::spec` are all generated from it, so they cannot drift apart.
macro_rules! kernel_table {
    ($($kernel:ident => ($source:expr, $entry:literal, [$($access:ident),*]),)*) => {
        /// One WGSL entry point. Its name is the op's name on both backends.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Kernel {
            $($kernel,)*
        }

        impl Kernel {
            pub const ALL: &'static [Kernel] = &[$(Kernel::$kernel,)*];

            /// (WGSL source, entry point, storage bindings in order).
            pub fn spec(self) -> (&'static str, &'static str, &'static [Access]) {
                match self {
                    $(Kernel::$kernel => ($source, $entry, &[$($access),*]),)*
                }
            }
        }
    };
}

kernel_table! {
    PixelsToF32 => (ELEMENTWISE_WGSL, "pixels_to_f32", [Read, ReadWrite, Read]),
    MatmulAB => (MATMUL_WGSL, "matmul_ab", [Read, Read, ReadWrite, Read]),
    MatmulAtB => (MATMUL_WGSL, "matmul_atb", [Read, Read, ReadWrite, Read]),
    MatmulABt => (MATMUL_WGSL, "matmul_abt", [Read, Read, ReadWrite, Read]),
    MatmulABRegister => (MATMUL_REGISTER_WGSL, "matmul_ab_register", [Read, Read, ReadWrite, Read]),
    MatmulAtBRegister => (MATMUL_REGISTER_WGSL, "matmul_atb_register", [Read, Read, ReadWrite, Read]),
    MatmulABtRegister => (MATMUL_REGISTER_WGSL, "matmul_abt_register", [Read, Read, ReadWrite, Read]),
    MatmulABWide => (MATMUL_WIDE_WGSL, "matmul_ab_wide", [Read, Read, ReadWrite, Read]),
    MatmulAtBWide => (MATMUL_WIDE_WGSL, "matmul_atb_wide", [Read, Read, ReadWrite, Read]),
    MatmulABtWide => (MATMUL_WIDE_WGSL, "matmul_abt_wide", [Read, Read, ReadWrite, Read]),
    // `matmul_abt` compiled with an epilogue (see `Kernel::epilogue`): bias and ReLU (a Linear
    // forward), or those and the NCHW store (a conv forward).
    MatmulABtBias => (MATMUL_WGSL, "matmul_abt", [Read, Read, ReadWrite, Read]),
    MatmulABtRegisterBias => (MATMUL_REGISTER_WGSL, "matmul_abt_register", [Read, Read, ReadWrite, Read]),
    MatmulABtWideBias => (MATMUL_WIDE_WGSL, "matmul_abt_wide", [Read, Read, ReadWrite, Read]),
    MatmulABtNchw => (MATMUL_WGSL, "matmul_abt", [Read, Read, ReadWrite, Read]),
    MatmulABtRegisterNchw => (MATMUL_REGISTER_WGSL, "matmul_abt_register", [Read, Read, ReadWrite, Read]),
    MatmulABtWideNchw => (MATMUL_WIDE_WGSL, "matmul_abt_wide", [Read, Read, ReadWrite, Read]),
    SumSplits => (REDUCE_WGSL, "sum_splits", [Read, ReadWrite, Read]),
    AddBias => (ELEMENTWISE_WGSL, "add_bias", [ReadWrite, Read]),
    AddBiasRelu => (ELEMENTWISE_WGSL, "add_bias_relu", [ReadWrite, Read]),
    ReluBackward => (ELEMENTWISE_WGSL, "relu_backward", [ReadWrite, Read]),
    BiasGrad => (REDUCE_WGSL, "bias_grad", [Read, ReadWrite]),
    SoftmaxXent => (LOSS_WGSL, "softmax_xent", [Read, Read, ReadWrite, ReadWrite]),
    LossSums => (LOSS_WGSL, "loss_sums", [Read, ReadWrite]),
    SgdUpdate => (OPTIM_WGSL, "sgd_update", [ReadWrite, Read, ReadWrite]),
    AdamUpdate => (OPTIM_WGSL, "adam_update", [ReadWrite, Read, ReadWrite, ReadWrite]),
    RmspropUpdate => (OPTIM_WGSL, "rmsprop_update", [ReadWrite, Read, ReadWrite, ReadWrite]),
    Relu => (ELEMENTWISE_WGSL, "relu", [ReadWrite]),
    Add => (ELEMENTWISE_WGSL, "add", [Read, Read, ReadWrite]),
    Scale => (ELEMENTWISE_WGSL, "scale", [ReadWrite]),
    CopyRows => (ELEMENTWISE_WGSL, "copy_rows", [Read, ReadWrite]),
    Im2col => (CONV_WGSL, "im2col", [Read, ReadWrite]),
    Col2im => (CONV_WGSL, "col2im", [Read, ReadWrite]),
    ToChannelsFirst => (CONV_WGSL, "to_channels_first", [Read, Read, ReadWrite]),
    ToChannelsLast => (CONV_WGSL, "to_channels_last", [Read, ReadWrite]),
    Maxpool => (POOL_WGSL, "maxpool", [Read, ReadWrite, ReadWrite]),
    MaxpoolBackward => (POOL_WGSL, "maxpool_backward", [Read, Read, ReadWrite]),
    Avgpool => (POOL_WGSL, "avgpool", [Read, ReadWrite]),
    AvgpoolBackward => (POOL_WGSL, "avgpool_backward", [Read, ReadWrite]),
    BatchnormStats => (BATCHNORM_WGSL, "batchnorm_stats", [Read, ReadWrite, ReadWrite, ReadWrite]),
    BatchnormForward => (BATCHNORM_WGSL, "batchnorm_forward", [Read, Read, Read, Read, ReadWrite]),
    BatchnormBackwardReduce => (BATCHNORM_WGSL, "batchnorm_backward_reduce", [Read, Read, Read, ReadWrite, ReadWrite]),
    BatchnormBackward => (BATCHNORM_WGSL, "batchnorm_backward", [Read, Read, Read, Read, Read, Read, ReadWrite]),
    BatchnormPartial => (BATCHNORM_WGSL, "batchnorm_partial", [Read, Read, Read, ReadWrite]),
    BatchnormFinish => (BATCHNORM_WGSL, "batchnorm_finish", [Read, ReadWrite, ReadWrite, ReadWrite]),
    Dropout => (ELEMENTWISE_WGSL, "dropout", [ReadWrite]),
    Normalize => (ELEMENTWISE_WGSL, "normalize", [ReadWrite, Read]),
    GatherBatch => (GATHER_WGSL, "gather_batch", [Read, Read, Read, Read, ReadWrite, ReadWrite]),
}

impl Kernel {
    pub fn name(self) -> &'static str {
        self.spec().1
    }

    /// The name with the epilogue a pipeline was compiled with, so that profiles tell the
    /// matmuls of a Linear (`+bias`) and a conv (`+nchw`) forward from the plain ones.
    pub fn label(self) -> &'static str {
        use Kernel::*;
        match self {
            MatmulABtBias => "matmul_abt+bias",
            MatmulABtRegisterBias => "matmul_abt_register+bias",
            MatmulABtWideBias => "matmul_abt_wide+bias",
            MatmulABtNchw => "matmul_abt+nchw",
            MatmulABtRegisterNchw => "matmul_abt_register+nchw",
            MatmulABtWideNchw => "matmul_abt_wide+nchw",
            _ => self.name(),
        }
    }

    /// The WGSL override `EPILOGUE` a matmul pipeline is compiled with: 0 none, 1 bias and ReLU
    /// as C is stored, 2 those and the NCHW store (shaders/matmul_common.wgsl). Each is its own
    /// pipeline so that the others leave the code out: on lavapipe the epilogue made LLVM take
    /// seconds longer over the register kernel, which a run's first step waits for.
    pub fn epilogue(self) -> u32 {
        use Kernel::*;
        match self {
            MatmulABtBias | MatmulABtRegisterBias | MatmulABtWideBias => 1,
            MatmulABtNchw | MatmulABtRegisterNchw | MatmulABtWideNchw => 2,
            _ => 0,
        }
    }
}

/// A compiled kernel: its pipeline and the layout its bind groups are made against.
pub struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// The kernels' pipelines, each compiled the first time it is used (a run compiles only what its
/// model needs, which keeps the cold start short: lavapipe spends ~50 ms of LLVM per pipeline).
/// Each WGSL file becomes one shader module shared by its entry points.
pub struct Pipelines {
    device: wgpu::Device,
    checks: wgpu::ShaderRuntimeChecks,
    modules: Vec<(&'static str, wgpu::ShaderModule)>,
    compiled: Vec<Option<Pipeline>>,
}

impl Pipelines {
    pub fn new(device: &wgpu::Device, software: bool) -> Self {
        Pipelines {
            device: device.clone(),
            checks: runtime_checks(
                software,
                std::env::var("STEEPEST_SHADER_CHECKS").ok().as_deref(),
            ),
            modules: Vec::new(),
            compiled: (0..Kernel::ALL.len()).map(|_| None).collect(),
        }
    }

    /// `kernel`'s pipeline, compiled now if this is its first use.
    pub fn get(&mut self, kernel: Kernel) -> &Pipeline {
        if self.compiled[kernel as usize].is_none() {
            self.compile(kernel);
        }
        self.compiled[kernel as usize].as_ref().expect("compiled above")
    }

    /// A pipeline that `get` has already compiled.
    pub fn compiled(&self, kernel: Kernel) -> &Pipeline {
        self.compiled[kernel as usize].as_ref().expect("dispatch compiles the pipeline it records")
    }

    /// Compiles every kernel (tests: every WGSL entry point must pass validation).
    pub fn compile_all(&mut self) {
        for &k in Kernel::ALL {
            self.get(k);
        }
    }

    fn compile(&mut self, kernel: Kernel) {
        let (source, entry, bindings) = kernel.spec();
        let module = match self.modules.iter().find(|(s, _)| std::ptr::eq(*s, source)) {
            Some((_, m)) => m.clone(),
            None => {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(entry),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                };
                // SAFETY: `runtime_checks` drops only checks whose conditions these shaders
                // meet: every loop is bounded by its params (see there).
                let m = unsafe { self.device.create_shader_module_trusted(desc, self.checks) };
                self.modules.push((source, m.clone()));
                m
            }
        };
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: None,
            },
            count: None,
        }];
        for (i, access) in bindings.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: *access == Read },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(entry),
            entries: &entries,
        });
        let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(entry),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: match kernel.epilogue() {
                    0 => &[],
                    1 => &[("EPILOGUE", 1.0)],
                    _ => &[("EPILOGUE", 2.0)],
                },
                ..Default::default()
            },
            cache: None,
        });
        self.compiled[kernel as usize] = Some(Pipeline { pipeline, layout });
    }
}

/// Which of the checks wgpu injects into shaders stay on.
///
/// On real GPUs the loop counter that wgpu adds to every loop (`force_loop_bounding`, a guard
/// against infinite loops in untrusted web shaders) is dropped: it keeps drivers from unrolling
/// the matmuls' inner loops, and without it (with division guards) the H200 ran the 4096³
/// matmul at 30.3 TFLOP/s instead of 25.2 and a LeNet step in 1.29 ms instead of 1.79. These
/// shaders are compiled into the binary, and each loop runs to a bound taken from its params
/// (buffer lengths, far from u32 overflow), so none can spin forever. Index clamping stays, so
/// a wrong index still reads inside its buffer. Software adapters keep every check: llvmpipe
/// ran no faster without them.
///
/// `STEEPEST_SHADER_CHECKS` = `all` | `no-loop-bounds` | `none` overrides this, for measuring
/// what the checks cost on a given driver (bench/device/run-gpu-checks.sh).
pub fn runtime_checks(software: bool, knob: Option<&str>) -> wgpu::ShaderRuntimeChecks {
    let all = wgpu::ShaderRuntimeChecks::checked();
    let no_loop_bounds = wgpu::ShaderRuntimeChecks { force_loop_bounding: false, ..all };
    match knob {
        Some("all") => all,
        Some("no-loop-bounds") => no_loop_bounds,
        Some("none") => wgpu::ShaderRuntimeChecks::unchecked(),
        other => {
            if let Some(v) = other {
                eprintln!(
                    "warning: STEEPEST_SHADER_CHECKS={v:?} is none of all, no-loop-bounds, \
                     none; using the adapter's default"
                );
            }
            if software {
                all
            } else {
                no_loop_bounds
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{runtime_checks, Kernel};

    #[test]
    fn profile_labels_name_the_epilogue() {
        let mut labels: Vec<_> = Kernel::ALL.iter().map(|k| k.label()).collect();
        for k in Kernel::ALL {
            assert!(k.label().starts_with(k.name()), "{k:?}");
            let suffix = ["", "+bias", "+nchw"][k.epilogue() as usize];
            assert_eq!(k.label(), format!("{}{suffix}", k.name()), "{k:?}");
        }
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), Kernel::ALL.len(), "one label per pipeline");
    }

    /// The fields that differ between the modes (the others are ray-query and mesh-shader
    /// checks these shaders have no use for).
    fn f(c: wgpu::ShaderRuntimeChecks) -> (bool, bool, bool) {
        (c.bounds_checks, c.force_loop_bounding, c.int_div_checks)
    }

    #[test]
    fn real_gpus_drop_only_the_loop_counters() {
        let gpu = runtime_checks(false, None);
        assert_eq!(f(gpu), (true, false, true));
        assert_eq!(f(runtime_checks(true, None)), (true, true, true), "software: every check");
        assert_eq!(f(runtime_checks(false, Some("all"))), (true, true, true));
        assert_eq!(f(runtime_checks(true, Some("no-loop-bounds"))), (true, false, true));
        assert_eq!(f(runtime_checks(true, Some("none"))), (false, false, false));
        assert_eq!(f(runtime_checks(false, Some("off"))), f(gpu), "an unknown value: the default");
    }
}
