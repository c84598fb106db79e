//! Which matmul kernel runs, and how its K is cut: one `matmul` op, three WGSL variants.
//!
//! - `register` (shaders/matmul_register.wgsl): no workgroup memory, no barriers, vec4 loads
//!   (scalar ones for an operand that is not aligned), 8×8 outputs per invocation; any shape.
//!   For software adapters (lavapipe, WARP, SwiftShader), where barriers are expensive and
//!   scalar loads are fetched lane by lane, and for misaligned shapes on real GPUs.
//! - `wide` (shaders/matmul_wide.wgsl): 128×128 tiles through double-buffered workgroup memory,
//!   vec4 loads, 8×8 outputs per invocation. For real GPUs, where both operands are aligned.
//! - `tiled` (shaders/matmul.wgsl): the first kernel, scalar loads through workgroup memory.
//!   Never picked any more (a fifth of the others' speed); kept as the plain reference that
//!   `STEEPEST_MATMUL=tiled` and the benchmarks compare against.
//!
//! K is cut into ranges (split-K) when the output has too few tiles to fill the device (a conv
//! weight gradient is one tile with K = batch × pixels), and always so that no invocation walks
//! more than a few thousand steps: llvmpipe ends an invocation's loops silently after 65,535
//! iterations in all (see shaders/matmul_common.wgsl), which made LeNet's first-conv weight
//! gradient wrong from batch 104 on. Splits run side by side into a scratch buffer and one
//! `sum_splits` pass adds them. Only when K is longer than what fits side by side (64 ranges, or
//! fewer when the scratch holds fewer) at the variant's longest range do passes run one after
//! the other and add into C.

use crate::backend::MatmulForm;

use super::kernels::Kernel;

/// One matmul kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulVariant {
    Tiled,
    Register,
    Wide,
}

impl MatmulVariant {
    pub const ALL: [MatmulVariant; 3] =
        [MatmulVariant::Tiled, MatmulVariant::Register, MatmulVariant::Wide];

    pub fn name(self) -> &'static str {
        match self {
            MatmulVariant::Tiled => "tiled",
            MatmulVariant::Register => "register",
            MatmulVariant::Wide => "wide",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == s)
    }

    /// Rows and columns of C per workgroup.
    pub fn tile(self) -> usize {
        match self {
            MatmulVariant::Tiled | MatmulVariant::Register => 64,
            MatmulVariant::Wide => 128,
        }
    }

    /// K ranges start at multiples of this (the kernel's step through K).
    fn k_step(self) -> usize {
        match self {
            MatmulVariant::Tiled => 16,
            MatmulVariant::Register => 4,
            MatmulVariant::Wide => 8,
        }
    }

    /// The longest K range one invocation walks. Loop iterations per step, counting inner loops
    /// that the compiler may leave rolled: tiled about 18 per 16 k, register about 13 per 4 k,
    /// wide about 9 per 8 k; these ranges keep every invocation under 20,000 of llvmpipe's
    /// 65,535 (and cost nothing measurable on real GPUs, where a range this long already fills
    /// a core for many microseconds).
    fn max_k_range(self) -> usize {
        match self {
            MatmulVariant::Tiled => 16_384,
            MatmulVariant::Register => 4_096,
            MatmulVariant::Wide => 16_384,
        }
    }

    /// Whether the variant takes this shape: `wide` needs both operands to be multiples of 4
    /// along the dimension each is loaded by (its storage row); `register` loads an operand
    /// that is not a scalar at a time (`vec4_loads`), and `tiled` takes anything.
    pub fn fits(self, form: MatmulForm, m: usize, k: usize, n: usize) -> bool {
        match self {
            MatmulVariant::Tiled | MatmulVariant::Register => true,
            MatmulVariant::Wide => vec4_loads(form, m, k, n) == 3,
        }
    }

    /// `matmul_abt` compiled with an epilogue (see `Kernel::epilogue`), with the NCHW store or
    /// without.
    pub fn abt_with_epilogue(self, nchw: bool) -> Kernel {
        match (self, nchw) {
            (MatmulVariant::Tiled, false) => Kernel::MatmulABtBias,
            (MatmulVariant::Register, false) => Kernel::MatmulABtRegisterBias,
            (MatmulVariant::Wide, false) => Kernel::MatmulABtWideBias,
            (MatmulVariant::Tiled, true) => Kernel::MatmulABtNchw,
            (MatmulVariant::Register, true) => Kernel::MatmulABtRegisterNchw,
            (MatmulVariant::Wide, true) => Kernel::MatmulABtWideNchw,
        }
    }

    pub fn kernel(self, form: MatmulForm) -> Kernel {
        match (self, form) {
            (MatmulVariant::Tiled, MatmulForm::AB) => Kernel::MatmulAB,
            (MatmulVariant::Tiled, MatmulForm::AtB) => Kernel::MatmulAtB,
            (MatmulVariant::Tiled, MatmulForm::ABt) => Kernel::MatmulABt,
            (MatmulVariant::Register, MatmulForm::AB) => Kernel::MatmulABRegister,
            (MatmulVariant::Register, MatmulForm::AtB) => Kernel::MatmulAtBRegister,
            (MatmulVariant::Register, MatmulForm::ABt) => Kernel::MatmulABtRegister,
            (MatmulVariant::Wide, MatmulForm::AB) => Kernel::MatmulABWide,
            (MatmulVariant::Wide, MatmulForm::AtB) => Kernel::MatmulAtBWide,
            (MatmulVariant::Wide, MatmulForm::ABt) => Kernel::MatmulABtWide,
        }
    }
}

/// Bit 0: A can be loaded as vec4s (its storage rows are a multiple of 4 long), bit 1: B can.
pub fn vec4_loads(form: MatmulForm, m: usize, k: usize, n: usize) -> u32 {
    let (a, b) = match form {
        MatmulForm::AB => (k, n),
        MatmulForm::AtB => (m, n),
        MatmulForm::ABt => (k, k),
    };
    a.is_multiple_of(4) as u32 | (b.is_multiple_of(4) as u32) << 1
}

/// What the plan needs to know of the adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterClass {
    /// Plan as for a CPU pretending to be a GPU (lavapipe, WARP, SwiftShader). Tests may plan
    /// as for the other kind (`GpuBackend::plan_as_software`); `AdapterClass::new` is the
    /// adapter's own class.
    pub software: bool,
    /// Workgroups that keep the device busy: a few per core of a software adapter, a few per
    /// compute unit of a GPU (wgpu does not say how many; 512 covers the largest).
    pub target_groups: usize,
    /// Floats of split-K scratch the plan may use (tests may lower it, see
    /// `GpuBackend::limit_split_scratch`).
    pub scratch_floats: usize,
    /// The longest K range a plan may use (tests lower it from `usize::MAX`, see
    /// `GpuBackend::limit_split_scratch`, to reach passes one after another at small shapes).
    pub k_range_cap: usize,
}

/// The most bytes one storage binding of this device can hold (a buffer is bound whole or as
/// a view, so the smaller of the two limits).
pub fn max_binding_bytes(limits: &wgpu::Limits) -> u64 {
    limits.max_storage_buffer_binding_size.min(limits.max_buffer_size)
}

/// `target_groups` of a discrete GPU.
pub const DISCRETE_GROUPS: usize = 512;

impl AdapterClass {
    /// `target_groups` of a software adapter: a few workgroups per core of this machine.
    pub fn software_groups() -> usize {
        4 * std::thread::available_parallelism().map_or(4, |n| n.get())
    }

    pub fn new(info: &wgpu::AdapterInfo, limits: &wgpu::Limits) -> Self {
        let software = info.device_type == wgpu::DeviceType::Cpu;
        let target_groups = match info.device_type {
            wgpu::DeviceType::Cpu => Self::software_groups(),
            wgpu::DeviceType::DiscreteGpu => DISCRETE_GROUPS,
            _ => 128,
        };
        let scratch_floats = (max_binding_bytes(limits).min(64 << 20) / 4) as usize;
        AdapterClass { software, target_groups, scratch_floats, k_range_cap: usize::MAX }
    }
}

/// How one matmul is dispatched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulPlan {
    pub variant: MatmulVariant,
    /// K per range (a multiple of the variant's step).
    pub k_chunk: usize,
    /// Ranges run side by side (grid z) in one pass; more than one writes scratch slices.
    pub splits: usize,
    /// K ranges in all: passes one after the other, each over up to `splits` ranges, add into
    /// C after the first.
    pub ranges: usize,
}

impl MatmulPlan {
    /// Each pass: its first range and how many ranges it runs side by side.
    pub fn passes(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.ranges)
            .step_by(self.splits)
            .map(|first| (first, self.splits.min(self.ranges - first)))
    }

    /// Workgroups of a pass over `splits` ranges.
    pub fn groups(&self, m: usize, n: usize, splits: usize) -> [u32; 3] {
        let t = self.variant.tile();
        [n.div_ceil(t) as u32, m.div_ceil(t) as u32, splits as u32]
    }
}

/// The kernel for an adapter and shape (`forced` when it fits), and how to cut K.
pub fn plan(
    class: &AdapterClass,
    forced: Option<MatmulVariant>,
    form: MatmulForm,
    m: usize,
    k: usize,
    n: usize,
) -> MatmulPlan {
    let variant = match forced {
        Some(v) if v.fits(form, m, k, n) => v,
        // Measured on lavapipe (Mesa 22.3) and an H200 (NVIDIA 580, Vulkan): register and wide
        // run at about the same speed on lavapipe (7.7 and 6.6 GFLOP/s at 512³), tiled at a
        // fifth; on the H200 wide reaches 25 TFLOP/s at 4096³ where register reaches 4.3 and
        // tiled 0.5, and tiled took 90 % of a LeNet step. So: wide on real GPUs where it fits,
        // register everywhere else (with scalar loads for an operand that is not aligned), and
        // split-K to fill the device when the output has few tiles.
        _ if !class.software && MatmulVariant::Wide.fits(form, m, k, n) => MatmulVariant::Wide,
        _ => MatmulVariant::Register,
    };
    let tile = variant.tile();
    let tiles = m.div_ceil(tile) * n.div_ceil(tile);
    // Split for parallelism only while each range keeps enough K to pay for its share of the
    // second pass.
    let min_range = if class.software { 2_048 } else { 256 };
    // Side by side as far as the scratch allows (and `sum_splits` adds at most 64 slices):
    // ranges past that would run as passes one after another, so rather lengthen each range,
    // up to the variant's longest. (The H200 ran LeNet's first-conv weight gradient as 5
    // passes of 64 ranges, each pass and its `sum_splits` one after the other.)
    let fit = (class.scratch_floats / (m * n).max(1)).clamp(1, 64);
    let want = class.target_groups.div_ceil(tiles.max(1)).min(k / min_range).min(fit).max(1);
    let step = variant.k_step();
    let k_chunk = k.div_ceil(want).div_ceil(step).max(1) * step;
    let longest = variant.max_k_range().min(class.k_range_cap / step * step).max(step);
    let k_chunk = k_chunk.min(longest);
    let ranges = k.div_ceil(k_chunk).max(1);
    if ranges == 1 {
        return MatmulPlan { variant, k_chunk, splits: 1, ranges: 1 };
    }
    let splits = ranges.min(fit);
    MatmulPlan { variant, k_chunk, splits, ranges }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAVAPIPE: AdapterClass = AdapterClass {
        software: true,
        target_groups: 8,
        scratch_floats: 16 << 20,
        k_range_cap: usize::MAX,
    };
    const DISCRETE: AdapterClass = AdapterClass {
        software: false,
        target_groups: 512,
        scratch_floats: 16 << 20,
        k_range_cap: usize::MAX,
    };

    #[test]
    fn every_range_is_short_and_covers_k() {
        // Also with no room for a second range side by side, and a K-range cap below the step.
        let tight = AdapterClass { scratch_floats: 1, k_range_cap: 3, ..DISCRETE };
        let capped = AdapterClass { k_range_cap: 1_000, ..LAVAPIPE };
        for class in [LAVAPIPE, DISCRETE, tight, capped] {
            for form in MatmulForm::ALL {
                for &(m, k, n) in
                    &[(8, 73_728, 25), (32, 150_000, 800), (4096, 4096, 4096), (1, 3, 1)]
                {
                    let p = plan(&class, None, form, m, k, n);
                    assert!(p.k_chunk <= p.variant.max_k_range());
                    let step = p.variant.k_step();
                    assert!(p.k_chunk <= class.k_range_cap.max(step), "{p:?}");
                    assert_eq!(p.k_chunk % p.variant.k_step(), 0);
                    assert!(p.k_chunk * p.ranges >= k, "{p:?} covers {k}");
                    assert!(p.k_chunk * (p.ranges - 1) < k, "{p:?}: an empty range");
                    let covered: usize = p.passes().map(|(_, s)| s).sum();
                    assert_eq!(covered, p.ranges);
                    assert!(p.passes().all(|(_, s)| s >= 1 && s <= p.splits));
                    assert!(p.splits == 1 || p.splits * m * n <= class.scratch_floats);
                }
            }
        }
    }

    #[test]
    fn variants_follow_the_adapter_and_the_alignment() {
        let p = plan(&LAVAPIPE, None, MatmulForm::ABt, 128, 784, 256);
        assert_eq!(p.variant, MatmulVariant::Register);
        // dX of the output layer: k = 10 classes is no multiple of 4.
        let p = plan(&LAVAPIPE, None, MatmulForm::AB, 128, 10, 256);
        assert_eq!(p.variant, MatmulVariant::Register);
        assert_eq!(vec4_loads(MatmulForm::AB, 128, 10, 256), 2, "A by scalars, B by vec4s");
        let p = plan(&DISCRETE, None, MatmulForm::AtB, 10, 128, 256);
        assert_eq!(p.variant, MatmulVariant::Register, "wide needs both operands aligned");
        let p = plan(&DISCRETE, None, MatmulForm::AB, 4096, 4096, 4096);
        assert_eq!(p.variant, MatmulVariant::Wide);
        let p = plan(&DISCRETE, Some(MatmulVariant::Register), MatmulForm::AB, 64, 64, 64);
        assert_eq!(p.variant, MatmulVariant::Register);
        let p = plan(&DISCRETE, Some(MatmulVariant::Wide), MatmulForm::AB, 64, 10, 64);
        assert_eq!(p.variant, MatmulVariant::Register, "a forced variant that does not fit");
        let p = plan(&LAVAPIPE, Some(MatmulVariant::Tiled), MatmulForm::AB, 64, 10, 64);
        assert_eq!(p.variant, MatmulVariant::Tiled);
    }

    #[test]
    fn a_one_tile_weight_gradient_is_split() {
        // LeNet's first conv at batch 128: dW = dZᵀ · col, 8 × 73,728 × 25.
        let p = plan(&DISCRETE, None, MatmulForm::AtB, 8, 73_728, 25);
        assert!(p.splits >= 32, "{p:?}");
        // ... and with 32 channels and patches padded to 28: all ranges side by side, one pass.
        let p = plan(&DISCRETE, None, MatmulForm::AtB, 32, 73_728, 28);
        assert_eq!((p.variant, p.splits, p.ranges), (MatmulVariant::Wide, 64, 64), "{p:?}");
        // Only K past what 64 of the longest ranges cover takes several passes.
        let p = plan(&DISCRETE, None, MatmulForm::AtB, 32, 2_000_000, 28);
        assert_eq!((p.splits, p.ranges), (64, 2_000_000usize.div_ceil(16_384)), "{p:?}");
        let p = plan(&LAVAPIPE, None, MatmulForm::AtB, 8, 73_728, 25);
        assert!(p.splits >= 8, "{p:?}");
    }
}
