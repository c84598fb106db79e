//! The op list that every device implements: one method per op. Layers, loss, optimizers and the
//! training loop are written once over this trait (see `nn`, `optim`, `train`).
//!
//! Ops record work; they do not return values. On the GPU they are queued into one command
//! encoder and run at `submit`; on the CPU they run at once. Only `read` brings numbers back.

use crate::Result;

/// Which operands of `C = op(A) · op(B)` are stored transposed. C is always `[m, n]`, row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulForm {
    /// A is `[m, k]`, B is `[k, n]` (backward: input gradient `dX = dY · W`).
    AB,
    /// A is stored `[k, m]`, B is `[k, n]` (backward: weight gradient `dW = dYᵀ · X`).
    AtB,
    /// A is `[m, k]`, B is stored `[n, k]` (forward: `Y = X · Wᵀ` with PyTorch's `[out, in]` W).
    ABt,
}

impl MatmulForm {
    pub const ALL: [MatmulForm; 3] = [MatmulForm::AB, MatmulForm::AtB, MatmulForm::ABt];
    /// The op's name: the CPU function's, the WGSL entry point's and the test's.
    pub fn name(self) -> &'static str {
        match self {
            MatmulForm::AB => "matmul_ab",
            MatmulForm::AtB => "matmul_atb",
            MatmulForm::ABt => "matmul_abt",
        }
    }
}

/// The shape of a batch of NCHW feature maps with each map flattened: `rows` samples of
/// `channels` planes of `pixels` values (batch norm's and the conv layout moves' geometry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Nchw {
    pub rows: usize,
    pub channels: usize,
    pub pixels: usize,
}

impl Nchw {
    pub fn new(rows: usize, channels: usize, pixels: usize) -> Self {
        Nchw { rows, channels, pixels }
    }
    /// Values in the whole batch.
    pub fn len(&self) -> usize {
        self.rows * self.channels * self.pixels
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The geometry of a sliding window over NCHW images (convolution or pooling), per sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Window {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
}

impl Window {
    /// A square window: `kernel`, `stride`, `padding` on both axes.
    pub fn square(
        channels: usize,
        height: usize,
        width: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        Window {
            channels,
            height,
            width,
            kernel_h: kernel,
            kernel_w: kernel,
            stride_h: stride,
            stride_w: stride,
            pad_h: padding,
            pad_w: padding,
        }
    }
    /// Output height, or 0 when the window does not fit (PyTorch's floor rule).
    pub fn out_h(&self) -> usize {
        (self.height + 2 * self.pad_h)
            .checked_sub(self.kernel_h)
            .map_or(0, |d| d / self.stride_h + 1)
    }
    pub fn out_w(&self) -> usize {
        (self.width + 2 * self.pad_w)
            .checked_sub(self.kernel_w)
            .map_or(0, |d| d / self.stride_w + 1)
    }
    /// Values in one patch: `channels · kernel_h · kernel_w`.
    pub fn patch_len(&self) -> usize {
        self.channels * self.kernel_h * self.kernel_w
    }
    /// Length of one row of the `im2col` matrix: the patch, padded with zeros to a multiple of
    /// 4, so that the GPU's vec4 matmul kernels can load it (a first conv has 25 or 27 values
    /// per patch, and the scalar fallback kernel ran its matmuls at a fifth of the speed).
    pub fn col_width(&self) -> usize {
        self.patch_len().div_ceil(4) * 4
    }
    /// Input values per sample.
    pub fn in_len(&self) -> usize {
        self.channels * self.height * self.width
    }
    /// Output pixels per sample and channel.
    pub fn out_pixels(&self) -> usize {
        self.out_h() * self.out_w()
    }
}

/// Batch-norm settings: PyTorch's `eps` (1e-5) and `momentum` (0.1) and whether batch
/// statistics are used (training) or the running ones (evaluation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormHyper {
    pub eps: f32,
    pub momentum: f32,
    pub train: bool,
}

/// Per-step values for `sgd_update`, PyTorch's `torch.optim.SGD` with dampening 0.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SgdHyper {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    /// True on the first step: the momentum buffer starts as the gradient itself.
    pub first_step: bool,
}

/// Per-step values for `adam_update`: `torch.optim.Adam` (L2 in the gradient) or `AdamW`
/// (decoupled decay), selected by `decoupled`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AdamHyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub decoupled: bool,
    /// `1 - beta1^t` and `1 - beta2^t` for the step number t (from 1), computed on the host in f64.
    pub bias_correction1: f32,
    pub bias_correction2: f32,
}

/// Per-step values for `rmsprop_update`, `torch.optim.RMSprop` (not centered).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RmspropHyper {
    pub lr: f32,
    pub alpha: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub momentum: f32,
}

/// A device that stores tensors and runs the ops. `Buf` holds f32 values; `Bytes` raw u8 pixels;
/// `Indices` u32 class labels. Lengths are in elements.
pub trait Backend {
    type Buf: Clone;
    type Bytes;
    type Indices;

    /// What the user sees as the device: the adapter's name, or `cpu`.
    fn device_name(&self) -> String;

    /// The most rows (or columns) one `matmul` can take: a GPU caps workgroups per dimension.
    fn max_matmul_dim(&self) -> usize {
        usize::MAX
    }

    /// A new zero-filled tensor. Fails with the limit's name if the device cannot hold it.
    fn alloc(&mut self, len: usize) -> Result<Self::Buf>;
    /// One allocation holding tensors of `lens` back to back, each from an offset the device
    /// can bind on its own ([`arena_layout`] with the device's alignment): the whole arena
    /// (zero-filled, padding included) and a view per tensor, in order (see [`Arena`]). An op on the whole
    /// arena treats it as one flat tensor, so the optimizer updates every parameter of a model
    /// in one call. Fails like `alloc` when the arena does not fit one buffer.
    fn alloc_arena(&mut self, lens: &[usize]) -> Result<Arena<Self::Buf>>;
    fn alloc_bytes(&mut self, len: usize) -> Result<Self::Bytes>;
    fn alloc_indices(&mut self, len: usize) -> Result<Self::Indices>;

    /// Overwrites the start of `dst` with `data` (in order with the recorded ops).
    fn write(&mut self, dst: &Self::Buf, data: &[f32]);
    fn write_bytes(&mut self, dst: &Self::Bytes, data: &[u8]);
    fn write_indices(&mut self, dst: &Self::Indices, data: &[u32]);
    /// Sets every element of `dst` to 0.
    fn fill_zero(&mut self, dst: &Self::Buf);
    /// Copies the first `len` values of `src` over the start of `dst` (in order with the
    /// recorded ops; a transfer, not a kernel: moving a model's initial weights into its arena).
    fn copy(&mut self, src: &Self::Buf, dst: &Self::Buf, len: usize);

    /// Runs everything recorded so far and returns the first `len` values of `src`. This is the
    /// only op that waits for the device; the training loop calls it only when it reports.
    fn read(&mut self, src: &Self::Buf, len: usize) -> Result<Vec<f32>>;
    /// Ends a step: hands the recorded work to the device without waiting for it.
    fn submit(&mut self);

    /// `dst[i] = src[i] / 255` for the first `len` bytes.
    fn pixels_to_f32(&mut self, src: &Self::Bytes, dst: &Self::Buf, len: usize);
    /// `C[m, n] = op(A) · op(B)` with the inner dimension `k` (see [`MatmulForm`]).
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &mut self,
        form: MatmulForm,
        a: &Self::Buf,
        b: &Self::Buf,
        c: &Self::Buf,
        m: usize,
        k: usize,
        n: usize,
    );
    /// `C = op(A) · op(B) + bias[col]` over `[m, n]` (`mkn` = `[m, k, n]`), then `max(C, 0)`
    /// when `relu`: a Linear layer's forward as one op, so that the GPU adds the bias and
    /// applies the ReLU as its matmul stores C (an epilogue) instead of in a pass of its own.
    /// The CPU runs `matmul` then `add_bias`, which the GPU matches bit for bit.
    #[allow(clippy::too_many_arguments)]
    fn matmul_bias(
        &mut self,
        form: MatmulForm,
        a: &Self::Buf,
        b: &Self::Buf,
        c: &Self::Buf,
        [m, k, n]: [usize; 3],
        bias: &Self::Buf,
        relu: bool,
    ) {
        self.matmul(form, a, b, c, m, k, n);
        self.add_bias(c, bias, m, n, relu);
    }
    /// `x[r, c] += bias[c]` over `[rows, cols]`, then `max(x, 0)` when `relu`.
    fn add_bias(&mut self, x: &Self::Buf, bias: &Self::Buf, rows: usize, cols: usize, relu: bool);
    /// `x = (x - mean[c]) · inv_std[c]` in place over NCHW `shape`, with `stats` =
    /// `[mean; C]` then `[inv_std; C]` (input normalisation, after `pixels_to_f32`).
    fn normalize(&mut self, x: &Self::Buf, stats: &Self::Buf, shape: Nchw);
    /// `x = max(x, 0)` in place, for a ReLU that no bias op before it could absorb.
    fn relu(&mut self, x: &Self::Buf, len: usize);
    /// `out = a + b` element-wise over `len` values (a residual block's sum, and its input
    /// gradient from two paths); `out` is a third buffer, aliasing neither.
    fn add(&mut self, a: &Self::Buf, b: &Self::Buf, out: &Self::Buf, len: usize);
    /// `x = x · factor` in place over `len` values (test-time augmentation's mean of logits).
    fn scale(&mut self, x: &Self::Buf, len: usize, factor: f32);
    /// `grad[i] = 0` where `activation[i] <= 0` (ReLU's backward, given its output).
    fn relu_backward(&mut self, grad: &Self::Buf, activation: &Self::Buf, len: usize);
    /// `out[c] = Σ_r grad[r, c]`: the bias gradient.
    fn bias_grad(&mut self, grad: &Self::Buf, out: &Self::Buf, rows: usize, cols: usize);
    /// Softmax cross-entropy over `[rows, cols]` logits with label smoothing `smoothing` (ε:
    /// PyTorch's `CrossEntropyLoss(label_smoothing=ε)`; 0 for the plain loss), fused: writes the
    /// gradient of the batch-mean loss into `grad` and adds `[Σ loss, #correct (argmax ==
    /// label), rows]` into `stats[0..3]`, so metrics accumulate on the device between reads.
    #[allow(clippy::too_many_arguments)]
    fn softmax_xent(
        &mut self,
        logits: &Self::Buf,
        labels: &Self::Indices,
        grad: &Self::Buf,
        stats: &Self::Buf,
        rows: usize,
        cols: usize,
        smoothing: f32,
    );

    /// Unfolds image patches: `col[(n, oy, ox), (c, ky, kx)] = x[n, c, oy·s+ky-p, ox·s+kx-p]`
    /// (0 in the padding), so a convolution becomes `col · Wᵀ` with PyTorch's `[O, C, K, K]` W.
    /// Rows are [`Window::col_width`] long; the values past the patch are 0.
    fn im2col(&mut self, x: &Self::Buf, col: &Self::Buf, rows: usize, w: &Window);
    /// The adjoint of `im2col`: each input value sums the patch entries it was copied to (the
    /// columns past the patch are ignored).
    fn col2im(&mut self, col: &Self::Buf, x: &Self::Buf, rows: usize, w: &Window);
    /// Assembles a batch from a data set the device holds (`images` u8, sample-major; `labels`
    /// one per sample): for sample `r`, `batch[2r]` is its index and `batch[2r + 1]` its
    /// augmentation code (`data::loader::decode_shift`); `input[r] = augment(images[index]) / 255`
    /// exactly as `augment_image` then `pixels_to_f32` make it, and `labels_out[r] =
    /// labels[index]`. `shape` is (channels, height, width).
    ///
    /// `images` holds the samples `held` (a data set larger than one buffer is split across
    /// several, see [`max_bytes_per_buffer`](Backend::max_bytes_per_buffer)): rows whose index
    /// falls outside are left as they are, for another part's call to write.
    #[allow(clippy::too_many_arguments)]
    fn gather_batch(
        &mut self,
        images: &Self::Bytes,
        held: std::ops::Range<usize>,
        labels: &Self::Indices,
        batch: &Self::Indices,
        input: &Self::Buf,
        labels_out: &Self::Indices,
        rows: usize,
        shape: [usize; 3],
    );
    /// The most bytes one `alloc_bytes` buffer can hold: a GPU caps what one binding may span.
    fn max_bytes_per_buffer(&self) -> usize {
        usize::MAX
    }
    /// Whether training should keep an in-memory data set on the device and upload only each
    /// batch's indices (`gather_batch`): yes for a GPU, where every upload crosses the bus.
    fn holds_data(&self) -> bool {
        false
    }
    /// `dst[r, c] = src[r·src_width + c]` for `c < cols`, 0 for `cols <= c < dst_width`: pads
    /// rows to a wider stride, or trims them back (the GPU's conv weights to and from
    /// [`Window::col_width`]).
    fn copy_rows(
        &mut self,
        src: &Self::Buf,
        dst: &Self::Buf,
        rows: usize,
        cols: usize,
        src_width: usize,
        dst_width: usize,
    );
    /// `y[n, c, p] = z[n·pixels + p, c] (+ bias[c]) (then ReLU)`: a convolution's rows back to NCHW.
    fn to_channels_first(
        &mut self,
        z: &Self::Buf,
        bias: Option<&Self::Buf>,
        y: &Self::Buf,
        shape: Nchw,
        relu: bool,
    );
    /// `z[n·pixels + p, c] = y[n, c, p]`: NCHW gradients to the rows the conv's matmuls take.
    fn to_channels_last(&mut self, y: &Self::Buf, z: &Self::Buf, shape: Nchw);
    /// Floats of the `col` and `z` scratch buffers [`conv2d_forward`](Backend::conv2d_forward)
    /// needs for `rows` samples: the GPU's are the batch-sized patch matrix and matmul output.
    fn conv_scratch_len(&self, rows: usize, w: &Window, outputs: usize) -> (usize, usize);
    /// A whole Conv2d forward: `y[n, o, p] = Σ_k weight[o, k] · patch(n, p)[k] (+ bias[o])
    /// (then ReLU)`, with `weight` in PyTorch's `[out, in·kh·kw]` layout. `col` (rows·pixels·patch)
    /// and `z` (rows·pixels·outputs) are scratch; `col` must survive until
    /// [`conv2d_backward`](Backend::conv2d_backward), in whatever layout the backend chose.
    ///
    /// The GPU runs `im2col` → matmul → `to_channels_first` over the whole batch (src/gpu/conv.rs);
    /// the CPU does the same steps a few samples at a time per thread (src/cpu/conv.rs);
    /// tests/cross_check_conv.rs holds the two to the same results.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_forward(
        &mut self,
        x: &Self::Buf,
        weight: &Self::Buf,
        bias: Option<&Self::Buf>,
        y: &Self::Buf,
        col: &Self::Buf,
        z: &Self::Buf,
        rows: usize,
        w: &Window,
        outputs: usize,
        relu: bool,
    );
    /// A whole Conv2d backward from `dy` (NCHW): the weight gradient, the bias gradient when
    /// there is a bias, and the input gradient when `dx` is given. `x` is forward's input; the
    /// GPU uses `col` as forward left it instead. Overwrites `col` and `z`.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_backward(
        &mut self,
        x: &Self::Buf,
        dy: &Self::Buf,
        weight: &Self::Buf,
        grad_weight: &Self::Buf,
        grad_bias: Option<&Self::Buf>,
        dx: Option<&Self::Buf>,
        col: &Self::Buf,
        z: &Self::Buf,
        rows: usize,
        w: &Window,
        outputs: usize,
    );
    /// Max pooling (no padding); `argmax` keeps the flat input index each output came from.
    fn maxpool(
        &mut self,
        x: &Self::Buf,
        y: &Self::Buf,
        argmax: &Self::Indices,
        rows: usize,
        w: &Window,
    );
    /// Routes each output gradient to the input its maximum came from (summing overlaps).
    fn maxpool_backward(
        &mut self,
        dy: &Self::Buf,
        argmax: &Self::Indices,
        dx: &Self::Buf,
        rows: usize,
        w: &Window,
    );
    /// Average pooling (no padding).
    fn avgpool(&mut self, x: &Self::Buf, y: &Self::Buf, rows: usize, w: &Window);
    fn avgpool_backward(&mut self, dy: &Self::Buf, dx: &Self::Buf, rows: usize, w: &Window);

    /// Per-channel statistics of NCHW `x` `[rows, channels, pixels]` into `saved` = `[mean; C]`
    /// then `[1/√(var + eps); C]`. Training: batch mean and biased variance, and the running
    /// averages move by `momentum` (the running variance takes the unbiased one, as PyTorch).
    /// Evaluation: the running averages, which stay untouched.
    fn batchnorm_stats(
        &mut self,
        x: &Self::Buf,
        saved: &Self::Buf,
        running_mean: &Self::Buf,
        running_var: &Self::Buf,
        shape: Nchw,
        h: &BatchNormHyper,
    );
    /// `y = (x - mean)·invstd·gamma + beta` per channel, from `saved`.
    fn batchnorm_forward(
        &mut self,
        x: &Self::Buf,
        saved: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        y: &Self::Buf,
        shape: Nchw,
    );
    /// Per channel: `grad_gamma = Σ dy·x̂`, `grad_beta = Σ dy`, with `x̂ = (x - mean)·invstd`.
    fn batchnorm_backward_reduce(
        &mut self,
        x: &Self::Buf,
        dy: &Self::Buf,
        saved: &Self::Buf,
        grad_gamma: &Self::Buf,
        grad_beta: &Self::Buf,
        shape: Nchw,
    );
    /// `dx = gamma·invstd/M · (M·dy - grad_beta - x̂·grad_gamma)`, M = rows·pixels (training-mode
    /// batch norm's input gradient).
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_backward(
        &mut self,
        x: &Self::Buf,
        dy: &Self::Buf,
        saved: &Self::Buf,
        gamma: &Self::Buf,
        grad_gamma: &Self::Buf,
        grad_beta: &Self::Buf,
        dx: &Self::Buf,
        shape: Nchw,
    );
    /// Inverted dropout in place: element i is zeroed when `dropout_keep(seed, i, p)` says so,
    /// else scaled by 1/(1-p). The same call is its own backward (same seed, same mask).
    fn dropout(&mut self, x: &Self::Buf, len: usize, seed: u32, p: f32);

    /// One SGD step on `param` (momentum buffer `velocity`).
    fn sgd_update(
        &mut self,
        param: &Self::Buf,
        grad: &Self::Buf,
        velocity: &Self::Buf,
        len: usize,
        h: &SgdHyper,
    );
    /// One Adam/AdamW step on `param` (moments `m` and `v`).
    fn adam_update(
        &mut self,
        param: &Self::Buf,
        grad: &Self::Buf,
        m: &Self::Buf,
        v: &Self::Buf,
        len: usize,
        h: &AdamHyper,
    );
    /// One RMSprop step on `param` (running square average `square_avg`, momentum `velocity`).
    fn rmsprop_update(
        &mut self,
        param: &Self::Buf,
        grad: &Self::Buf,
        square_avg: &Self::Buf,
        velocity: &Self::Buf,
        len: usize,
        h: &RmspropHyper,
    );
}

/// Tensors in one allocation ([`Backend::alloc_arena`]).
pub struct Arena<Buf> {
    /// The whole allocation, padding included.
    pub whole: Buf,
    /// Its length in values.
    pub len: usize,
    /// One view per tensor, in the order asked for, and where each starts.
    pub views: Vec<Buf>,
    pub starts: Vec<usize>,
}

/// Where each of the tensors `lens` starts in an arena whose tensors start at multiples of
/// `align` values, and the arena's length (a multiple of `align` too).
pub fn arena_layout(lens: &[usize], align: usize) -> (Vec<usize>, usize) {
    let mut starts = Vec::with_capacity(lens.len());
    let mut end = 0;
    for &len in lens {
        starts.push(end);
        end += len.div_ceil(align).max(1) * align;
    }
    (starts, end)
}

/// A 32-bit integer hash (PCG's output permutation), the same on the CPU and in WGSL.
pub fn hash_u32(x: u32) -> u32 {
    let state = x.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// Whether dropout keeps element `i` for mask `seed` at drop probability `p`.
pub fn dropout_keep(seed: u32, i: u32, p: f32) -> bool {
    let threshold = (p as f64 * 4_294_967_296.0).min(4_294_967_295.0) as u32;
    hash_u32(i ^ hash_u32(seed)) >= threshold
}
