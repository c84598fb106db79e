//! Models: the spec a user types (`lenet`, `mlp:256`, `conv:32:5,relu,...`), the layers it
//! builds (an `nn.Sequential`), and forward and backward passes written once over [`Backend`].

mod spec;

pub use spec::{LayerSpec, ModelSpec, GRAMMAR, PRESETS};

use std::cell::Cell;
use std::fmt;

use crate::backend::{hash_u32, Backend, BatchNormHyper, MatmulForm, Window};
use crate::{Error, Result};

/// The shape of one sample between layers: channels × height × width (a flat vector is n×1×1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Shape {
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        Shape { channels, height, width }
    }
    pub fn flat(n: usize) -> Self {
        Shape::new(n, 1, 1)
    }
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<usize> for Shape {
    fn from(n: usize) -> Self {
        Shape::flat(n)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.height == 1 && self.width == 1 {
            write!(f, "{}", self.channels)
        } else {
            write!(f, "{}x{}x{}", self.channels, self.height, self.width)
        }
    }
}

/// Training (batch statistics, dropout on; `step` picks the dropout masks) or evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train { step: u64 },
    Eval,
}

/// PyTorch's BatchNorm2d defaults.
const BN_EPS: f32 = 1e-5;
const BN_MOMENTUM: f32 = 0.1;

/// Learnable weights of a Linear or Conv2d layer, PyTorch's layouts: `[out, in]` or
/// `[out, in, k, k]`; the bias is optional for convolutions.
pub struct Weights<B: Backend> {
    pub weight: B::Buf,
    pub bias: Option<B::Buf>,
    pub grad_weight: B::Buf,
    pub grad_bias: Option<B::Buf>,
    pub weight_shape: Vec<usize>,
}

impl<B: Backend> Weights<B> {
    /// PyTorch's default init for Linear and Conv2d: uniform ±1/√fan_in for weight and bias.
    fn new(b: &mut B, rng: &mut fastrand::Rng, shape: Vec<usize>, bias: bool) -> Result<Self> {
        // Weight, gradient and two optimizer states, in f32, before anything is allocated.
        let len = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let need = len.and_then(|n| (n as u64).checked_mul(16));
        let what = format!("a layer with weights {shape:?} (weights, gradients, optimizer state)");
        if let Some(why) = crate::device::memory_shortfall(need, &what) {
            return Err(Error::config("--model", why));
        }
        let len = len.unwrap_or(0);
        let fan_in = len / shape[0];
        let bound = 1.0 / (fan_in as f32).sqrt();
        let mut uniform =
            |n: usize| -> Vec<f32> { (0..n).map(|_| (rng.f32() * 2.0 - 1.0) * bound).collect() };
        let w = uniform(len);
        let weight = b.alloc(len)?;
        b.write(&weight, &w);
        let (bias, grad_bias) = if bias {
            let values = uniform(shape[0]);
            let buf = b.alloc(shape[0])?;
            b.write(&buf, &values);
            (Some(buf), Some(b.alloc(shape[0])?))
        } else {
            (None, None)
        };
        Ok(Weights { weight, bias, grad_weight: b.alloc(len)?, grad_bias, weight_shape: shape })
    }

    /// BatchNorm's affine parameters: weight (gamma) 1, bias (beta) 0, as PyTorch starts them.
    fn affine(b: &mut B, channels: usize) -> Result<Self> {
        let (weight, bias) = (b.alloc(channels)?, b.alloc(channels)?);
        b.write(&weight, &vec![1.0; channels]);
        Ok(Weights {
            weight,
            bias: Some(bias),
            grad_weight: b.alloc(channels)?,
            grad_bias: Some(b.alloc(channels)?),
            weight_shape: vec![channels],
        })
    }

    fn len(&self) -> usize {
        self.weight_shape.iter().product()
    }
}

/// One built layer. ReLUs right after a Linear or Conv2d are `fused`: that layer applies them.
pub enum Layer<B: Backend> {
    Linear {
        weights: Weights<B>,
        inputs: usize,
        outputs: usize,
        relu: bool,
    },
    Conv {
        weights: Weights<B>,
        window: Window,
        outputs: usize,
        relu: bool,
    },
    Relu {
        fused: bool,
    },
    Flatten,
    MaxPool {
        window: Window,
    },
    AvgPool {
        window: Window,
    },
    BatchNorm {
        weights: Weights<B>,
        running_mean: B::Buf,
        running_var: B::Buf,
        tracked: Cell<u64>,
        channels: usize,
        pixels: usize,
    },
    Dropout {
        p: f32,
    },
}

impl<B: Backend> Layer<B> {
    fn weights(&self) -> Option<&Weights<B>> {
        match self {
            Layer::Linear { weights, .. }
            | Layer::Conv { weights, .. }
            | Layer::BatchNorm { weights, .. } => Some(weights),
            _ => None,
        }
    }

    /// Layers that work in place on the buffers of the layer before.
    fn in_place(&self) -> bool {
        matches!(self, Layer::Relu { .. } | Layer::Flatten | Layer::Dropout { .. })
    }
}

/// A parameter tensor as the optimizer and checkpoints see it.
pub struct Param<'a, B: Backend> {
    /// PyTorch `state_dict` name: the layer's position in the `nn.Sequential`, then the field.
    pub name: String,
    pub shape: Vec<usize>,
    pub value: &'a B::Buf,
    pub grad: &'a B::Buf,
}

impl<'a, B: Backend> Param<'a, B> {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Host-side tensors by `state_dict` name, in model order.
pub type HostTensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// One line of the model summary.
pub struct SummaryRow {
    pub position: usize,
    pub layer: String,
    pub output: Shape,
    pub params: usize,
}

/// A sequential model over a backend.
pub struct Model<B: Backend> {
    pub spec: ModelSpec,
    pub input: Shape,
    /// Values per input sample (`input.len()`).
    pub input_size: usize,
    pub num_classes: usize,
    pub layers: Vec<Layer<B>>,
    /// Each layer's output shape.
    pub shapes: Vec<Shape>,
    /// Seeds the dropout masks (with the step and the layer's position).
    pub seed: u64,
    /// Per-channel input normalisation applied after `pixels_to_f32`: `(means, stds)` and the
    /// device copy `[mean; C][1/std; C]`.
    pub normalization: Option<(Vec<f32>, Vec<f32>, B::Buf)>,
}

/// A state_dict entry being loaded.
struct PlainParam<'a, B: Backend> {
    name: String,
    shape: Vec<usize>,
    value: &'a B::Buf,
}

/// A square window over `shape`, or `None` when its output would be empty.
fn fitted_window(shape: Shape, kernel: usize, stride: usize, padding: usize) -> Option<Window> {
    let w = Window::square(shape.channels, shape.height, shape.width, kernel, stride, padding);
    (w.out_h() > 0 && w.out_w() > 0).then_some(w)
}

/// PyTorch's `state_dict` order: by position; weight, bias, running_mean, running_var,
/// num_batches_tracked.
pub fn sort_state_dict(t: &mut HostTensors) {
    fn key(name: &str) -> (usize, u8) {
        let (pos, field) = name.split_once('.').unwrap_or((name, ""));
        let rank = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
            .iter()
            .position(|f| *f == field)
            .unwrap_or(9);
        (pos.parse().unwrap_or(usize::MAX), rank as u8)
    }
    t.sort_by_key(|(name, _, _)| key(name));
}

/// A build error that names the layer.
fn layer_error(position: usize, spec: &LayerSpec, why: String) -> Error {
    Error::config("--model", format!("layer {position} ({spec}): {why}"))
}

impl<B: Backend> Model<B> {
    /// Builds the layers for `input` samples and `num_classes` classes, checking every shape
    /// first, with PyTorch's default init drawn on the host from `seed` (so every backend starts
    /// from the same numbers).
    pub fn new(
        b: &mut B,
        spec: &ModelSpec,
        input: impl Into<Shape>,
        num_classes: usize,
        seed: u64,
    ) -> Result<Self> {
        let input = input.into();
        if input.is_empty() || num_classes == 0 {
            return Err(Error::config(
                "--model",
                format!(
                    "{spec} needs at least one input and one class (got {input} and {num_classes})"
                ),
            ));
        }
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut layers = Vec::new();
        let mut shapes = Vec::new();
        // A model that starts with Linear takes the image as a flat vector (MLPs on pixels).
        let mut shape = input;
        let last = spec.layers.len() - 1;
        for (position, ls) in spec.layers.iter().enumerate() {
            let next_is_relu = spec.layers.get(position + 1) == Some(&LayerSpec::Relu);
            let err = |why: String| layer_error(position, ls, why);
            let (layer, out) = match *ls {
                LayerSpec::Linear { out } => {
                    if position > 0 && (shape.height != 1 || shape.width != 1) {
                        return Err(err(format!(
                            "takes a flat vector but gets {shape}; put flatten before it"
                        )));
                    }
                    let inputs = shape.len();
                    let outputs = out.unwrap_or(num_classes);
                    if position == last && outputs != num_classes {
                        return Err(err(format!("the last layer gives {outputs} outputs but the data has {num_classes} classes; write plain `linear`")));
                    }
                    let weights = Weights::new(b, &mut rng, vec![outputs, inputs], true)?;
                    (
                        Layer::Linear { weights, inputs, outputs, relu: next_is_relu },
                        Shape::flat(outputs),
                    )
                }
                LayerSpec::Conv { out, kernel, stride, padding, bias } => {
                    let window = fitted_window(shape, kernel, stride, padding).ok_or_else(|| {
                        err(format!(
                            "a {kernel}x{kernel} kernel with padding {padding} does not fit the {}x{} input (output would be empty)",
                            shape.height, shape.width
                        ))
                    })?;
                    let weights =
                        Weights::new(b, &mut rng, vec![out, shape.channels, kernel, kernel], bias)?;
                    let out_shape = Shape::new(out, window.out_h(), window.out_w());
                    (Layer::Conv { weights, window, outputs: out, relu: next_is_relu }, out_shape)
                }
                LayerSpec::Relu => {
                    let fused = position > 0
                        && matches!(
                            spec.layers[position - 1],
                            LayerSpec::Linear { .. } | LayerSpec::Conv { .. }
                        );
                    (Layer::Relu { fused }, shape)
                }
                LayerSpec::Flatten => (Layer::Flatten, Shape::flat(shape.len())),
                LayerSpec::MaxPool { kernel, stride } | LayerSpec::AvgPool { kernel, stride } => {
                    let window = fitted_window(shape, kernel, stride, 0).ok_or_else(|| {
                        err(format!(
                            "a {kernel}x{kernel} window does not fit the {}x{} input",
                            shape.height, shape.width
                        ))
                    })?;
                    let out = Shape::new(shape.channels, window.out_h(), window.out_w());
                    if matches!(ls, LayerSpec::MaxPool { .. }) {
                        (Layer::MaxPool { window }, out)
                    } else {
                        (Layer::AvgPool { window }, out)
                    }
                }
                LayerSpec::GlobalAvgPool => {
                    let window = Window {
                        channels: shape.channels,
                        height: shape.height,
                        width: shape.width,
                        kernel_h: shape.height,
                        kernel_w: shape.width,
                        stride_h: shape.height,
                        stride_w: shape.width,
                        pad_h: 0,
                        pad_w: 0,
                    };
                    (Layer::AvgPool { window }, Shape::new(shape.channels, 1, 1))
                }
                LayerSpec::BatchNorm => {
                    let c = shape.channels;
                    let (running_mean, running_var) = (b.alloc(c)?, b.alloc(c)?);
                    b.write(&running_var, &vec![1.0; c]);
                    let weights = Weights::affine(b, c)?;
                    let pixels = shape.height * shape.width;
                    (
                        Layer::BatchNorm {
                            weights,
                            running_mean,
                            running_var,
                            tracked: Cell::new(0),
                            channels: c,
                            pixels,
                        },
                        shape,
                    )
                }
                LayerSpec::Dropout { p } => (Layer::Dropout { p }, shape),
            };
            layers.push(layer);
            shapes.push(out);
            shape = out;
        }
        Ok(Model {
            spec: spec.clone(),
            input,
            input_size: input.len(),
            num_classes,
            layers,
            shapes,
            seed,
            normalization: None,
        })
    }

    /// Standardises every input channel: `(x/255 - mean[c]) / std[c]` (one mean and std per
    /// channel of the input).
    pub fn set_normalization(&mut self, b: &mut B, mean: &[f32], std: &[f32]) -> Result<()> {
        let c = self.input.channels;
        if mean.len() != c || std.len() != c {
            return Err(Error::config(
                "--normalize",
                format!("needs {c} means and {c} positive standard deviations for {c}-channel input (got {} and {})", mean.len(), std.len()),
            ));
        }
        // Pixels are in [0, 1] when normalised, so a mean far outside it or a standard
        // deviation near 0 or huge is a mistake (a NaN, or 255-scale numbers), not a choice:
        // it would train on NaNs or on all-but-constant inputs without a word.
        if let Some(m) = mean.iter().find(|m| !(m.is_finite() && m.abs() <= 1e3)) {
            return Err(Error::config(
                "--normalize",
                format!("mean {m} is not a finite number in [-1000, 1000] (pixels are scaled to [0, 1] first)"),
            ));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && (1e-6..=1e6).contains(*s))) {
            return Err(Error::config(
                "--normalize",
                format!("standard deviation {s} is not a finite number in [1e-6, 1e6]"),
            ));
        }
        let mut stats = mean.to_vec();
        stats.extend(std.iter().map(|s| 1.0 / s));
        let buf = b.alloc(2 * c)?;
        b.write(&buf, &stats);
        self.normalization = Some((mean.to_vec(), std.to_vec(), buf));
        Ok(())
    }

    /// Every parameter with its gradient, in `state_dict` order.
    pub fn params(&self) -> Vec<Param<'_, B>> {
        let mut out = Vec::new();
        for (position, layer) in self.layers.iter().enumerate() {
            if let Some(w) = layer.weights() {
                out.push(Param {
                    name: format!("{position}.weight"),
                    shape: w.weight_shape.clone(),
                    value: &w.weight,
                    grad: &w.grad_weight,
                });
                if let (Some(bias), Some(grad)) = (&w.bias, &w.grad_bias) {
                    out.push(Param {
                        name: format!("{position}.bias"),
                        shape: vec![w.weight_shape[0]],
                        value: bias,
                        grad,
                    });
                }
            }
        }
        out
    }

    /// `(value, grad, len)` of every parameter in `state_dict` order, without allocating: what
    /// the optimizer walks each step.
    pub fn param_buffers(&self) -> impl Iterator<Item = (&B::Buf, &B::Buf, usize)> {
        self.layers.iter().filter_map(|l| l.weights()).flat_map(|w| {
            let bias =
                w.bias.as_ref().zip(w.grad_bias.as_ref()).map(|(b, g)| (b, g, w.weight_shape[0]));
            std::iter::once((&w.weight, &w.grad_weight, w.len())).chain(bias)
        })
    }

    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.len()).sum()
    }

    /// Every matmul one training step over `rows` samples runs, as `(form, m, k, n, what)`:
    /// the shapes kernels must be right (and fast) at. The first layer's input gradient is
    /// never computed, so it is left out.
    pub fn matmul_shapes(&self, rows: usize) -> Vec<(MatmulForm, usize, usize, usize, String)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let (m, k, n) = match layer {
                Layer::Linear { inputs, outputs, .. } => (rows, *inputs, *outputs),
                Layer::Conv { window, outputs, .. } => {
                    (rows * window.out_pixels(), window.patch_len(), *outputs)
                }
                _ => continue,
            };
            // Forward Y = X·Wᵀ, weight gradient dW = dYᵀ·X, input gradient dX = dY·W.
            out.push((MatmulForm::ABt, m, k, n, format!("layer {i} forward")));
            out.push((MatmulForm::AtB, n, m, k, format!("layer {i} weight gradient")));
            if i > 0 {
                out.push((MatmulForm::AB, m, n, k, format!("layer {i} input gradient")));
            }
        }
        out
    }

    /// Each layer with its output shape and parameter count, for the summary printed before
    /// training.
    pub fn summary(&self) -> Vec<SummaryRow> {
        self.layers
            .iter()
            .enumerate()
            .map(|(position, layer)| SummaryRow {
                position,
                layer: self.spec.layers[position].to_string(),
                output: self.shapes[position],
                params: layer
                    .weights()
                    .map_or(0, |w| w.len() + w.bias.as_ref().map_or(0, |_| w.weight_shape[0])),
            })
            .collect()
    }

    /// The batch-norm running statistics, which checkpoints keep beside the parameters:
    /// `(name, shape, buffer)`; `num_batches_tracked` is a host-side count (see `export`).
    fn buffers(&self) -> Vec<(String, Vec<usize>, &B::Buf)> {
        let mut out = Vec::new();
        for (position, layer) in self.layers.iter().enumerate() {
            if let Layer::BatchNorm { running_mean, running_var, channels, .. } = layer {
                out.push((format!("{position}.running_mean"), vec![*channels], running_mean));
                out.push((format!("{position}.running_var"), vec![*channels], running_var));
            }
        }
        out
    }

    /// Reads the whole `state_dict` back to the host in PyTorch's order (parameters, then each
    /// batch norm's running mean, variance and `num_batches_tracked`, a scalar).
    pub fn export(&self, backend: &mut B) -> Result<HostTensors> {
        let mut out = Vec::new();
        for p in self.params() {
            let values = backend.read(p.value, p.len())?;
            out.push((p.name.clone(), p.shape.clone(), values));
        }
        for (name, shape, buf) in self.buffers() {
            let values = backend.read(buf, shape[0])?;
            out.push((name, shape, values));
        }
        for (position, layer) in self.layers.iter().enumerate() {
            if let Layer::BatchNorm { tracked, .. } = layer {
                out.push((
                    format!("{position}.num_batches_tracked"),
                    vec![],
                    vec![tracked.get() as f32],
                ));
            }
        }
        sort_state_dict(&mut out);
        Ok(out)
    }

    fn state_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.params().iter().map(|p| p.name.clone()).collect();
        names.extend(self.buffers().into_iter().map(|(n, _, _)| n));
        for (position, layer) in self.layers.iter().enumerate() {
            if matches!(layer, Layer::BatchNorm { .. }) {
                names.push(format!("{position}.num_batches_tracked"));
            }
        }
        names
    }

    /// Loads parameters by name; every tensor must be present with the model's shape, and no
    /// other tensor may be (as PyTorch's strict `load_state_dict`). `source` names the file.
    pub fn import(&self, backend: &mut B, tensors: &HostTensors, source: &str) -> Result<()> {
        let expected = self.state_names();
        let buffers = self.buffers();
        let entries = self.params().into_iter().map(|p| (p.name, p.shape, p.value)).chain(buffers);
        for p in entries.map(|(name, shape, value)| PlainParam::<B> { name, shape, value }) {
            let Some((_, shape, values)) = tensors.iter().find(|(n, _, _)| *n == p.name) else {
                return Err(Error::file(
                    source,
                    format!(
                        "tensor {:?} (shape {:?}) is missing; model {} expects {}",
                        p.name,
                        p.shape,
                        self.spec,
                        expected.join(", ")
                    ),
                ));
            };
            if *shape != p.shape {
                return Err(Error::file(
                    source,
                    format!(
                        "tensor {:?} has shape {:?}, but model {} with {} inputs and {} classes needs {:?}",
                        p.name, shape, self.spec, self.input, self.num_classes, p.shape
                    ),
                ));
            }
            backend.write(p.value, values);
        }
        for (position, layer) in self.layers.iter().enumerate() {
            if let Layer::BatchNorm { tracked, .. } = layer {
                let name = format!("{position}.num_batches_tracked");
                let count = tensors
                    .iter()
                    .find(|(n, _, _)| *n == name)
                    .and_then(|(_, _, v)| v.first().copied());
                let Some(count) = count else {
                    return Err(Error::file(
                        source,
                        format!(
                            "tensor {name:?} is missing; model {} expects {}",
                            self.spec,
                            expected.join(", ")
                        ),
                    ));
                };
                tracked.set(count.max(0.0) as u64);
            }
        }
        if let Some((extra, _, _)) = tensors.iter().find(|(n, _, _)| !expected.contains(n)) {
            return Err(Error::file(
                source,
                format!(
                    "unexpected tensor {extra:?}: model {} has only {}",
                    self.spec,
                    expected.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// Forward pass over the first `rows` samples in `ws.input`; logits end in the last
    /// activation buffer.
    pub fn forward(&self, b: &mut B, ws: &Workspace<B>, rows: usize, mode: Mode) {
        for (i, layer) in self.layers.iter().enumerate() {
            let x = if i == 0 { &ws.input } else { &ws.activations[i - 1] };
            let y = &ws.activations[i];
            match layer {
                Layer::Linear { weights, inputs, outputs, relu } => {
                    b.matmul(MatmulForm::ABt, x, &weights.weight, y, rows, *inputs, *outputs);
                    if let Some(bias) = &weights.bias {
                        b.add_bias(y, bias, rows, *outputs, *relu);
                    }
                }
                Layer::Conv { weights, window, outputs, relu } => {
                    let s = &ws.scratch[i];
                    let (col, z) =
                        (s.col.as_ref().expect("conv col"), s.z.as_ref().expect("conv z"));
                    b.conv2d_forward(
                        x,
                        &weights.weight,
                        weights.bias.as_ref(),
                        y,
                        col,
                        z,
                        rows,
                        window,
                        *outputs,
                        *relu,
                    );
                }
                // Fused: the layer before applied it. Otherwise in place (y aliases x).
                Layer::Relu { fused } => {
                    if !fused {
                        b.relu(y, rows * self.shapes[i].len());
                    }
                }
                Layer::Flatten => {}
                Layer::MaxPool { window } => b.maxpool(
                    x,
                    y,
                    ws.scratch[i].argmax.as_ref().expect("maxpool argmax"),
                    rows,
                    window,
                ),
                Layer::AvgPool { window } => b.avgpool(x, y, rows, window),
                Layer::BatchNorm {
                    weights,
                    running_mean,
                    running_var,
                    tracked,
                    channels,
                    pixels,
                } => {
                    let saved = ws.scratch[i].saved.as_ref().expect("batchnorm saved stats");
                    let train = matches!(mode, Mode::Train { .. });
                    let h = BatchNormHyper { eps: BN_EPS, momentum: BN_MOMENTUM, train };
                    b.batchnorm_stats(
                        x,
                        saved,
                        running_mean,
                        running_var,
                        rows,
                        *channels,
                        *pixels,
                        &h,
                    );
                    if train {
                        tracked.set(tracked.get() + 1);
                    }
                    let beta = weights.bias.as_ref().expect("batchnorm beta");
                    b.batchnorm_forward(
                        x,
                        saved,
                        &weights.weight,
                        beta,
                        y,
                        rows,
                        *channels,
                        *pixels,
                    );
                }
                Layer::Dropout { p } => {
                    if let Mode::Train { step } = mode {
                        b.dropout(y, rows * self.shapes[i].len(), self.dropout_seed(step, i), *p);
                    }
                }
            }
        }
    }

    /// The dropout mask of layer `position` at `step`: new every step, the same in backward.
    fn dropout_seed(&self, step: u64, position: usize) -> u32 {
        let s = self.seed
            ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (position as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        hash_u32((s ^ (s >> 32)) as u32)
    }

    /// The loss on the logits of the last forward pass: writes the logits' gradient and adds
    /// loss sum and correct count into `stats`.
    pub fn loss(&self, b: &mut B, ws: &Workspace<B>, stats: &B::Buf, rows: usize) {
        let last = self.layers.len() - 1;
        b.softmax_xent(
            &ws.activations[last],
            &ws.labels,
            &ws.grads[last],
            stats,
            rows,
            self.num_classes,
        );
    }

    /// Backward pass from the logits' gradient: fills every parameter's gradient. The input's
    /// gradient is never needed, so the first layer skips it.
    pub fn backward(&self, b: &mut B, ws: &Workspace<B>, rows: usize, mode: Mode) {
        for (i, layer) in self.layers.iter().enumerate().rev() {
            let g = &ws.grads[i];
            let x = if i == 0 { &ws.input } else { &ws.activations[i - 1] };
            let dx = if i == 0 { None } else { Some(&ws.grads[i - 1]) };
            match layer {
                Layer::Linear { weights, inputs, outputs, .. } => {
                    if let Some(gb) = &weights.grad_bias {
                        b.bias_grad(g, gb, rows, *outputs);
                    }
                    // dW[out, in] = dYᵀ · X; dX[rows, in] = dY · W.
                    b.matmul(MatmulForm::AtB, g, x, &weights.grad_weight, *outputs, rows, *inputs);
                    if let Some(dx) = dx {
                        b.matmul(MatmulForm::AB, g, &weights.weight, dx, rows, *outputs, *inputs);
                    }
                }
                Layer::Conv { weights, window, outputs, .. } => {
                    let s = &ws.scratch[i];
                    let (col, z) =
                        (s.col.as_ref().expect("conv col"), s.z.as_ref().expect("conv z"));
                    b.conv2d_backward(
                        x,
                        g,
                        &weights.weight,
                        &weights.grad_weight,
                        weights.grad_bias.as_ref(),
                        dx,
                        col,
                        z,
                        rows,
                        window,
                        *outputs,
                    );
                }
                // In place: the gradient buffer is shared with the layer before.
                Layer::Relu { .. } => {
                    b.relu_backward(g, &ws.activations[i], rows * self.shapes[i].len())
                }
                Layer::Flatten => {}
                Layer::MaxPool { window } => {
                    if let Some(dx) = dx {
                        b.maxpool_backward(
                            g,
                            ws.scratch[i].argmax.as_ref().expect("maxpool argmax"),
                            dx,
                            rows,
                            window,
                        );
                    }
                }
                Layer::AvgPool { window } => {
                    if let Some(dx) = dx {
                        b.avgpool_backward(g, dx, rows, window);
                    }
                }
                Layer::BatchNorm { weights, channels, pixels, .. } => {
                    let saved = ws.scratch[i].saved.as_ref().expect("batchnorm saved stats");
                    let (gg, gb) = (
                        &weights.grad_weight,
                        weights.grad_bias.as_ref().expect("batchnorm beta grad"),
                    );
                    b.batchnorm_backward_reduce(x, g, saved, gg, gb, rows, *channels, *pixels);
                    if let Some(dx) = dx {
                        b.batchnorm_backward(
                            x,
                            g,
                            saved,
                            &weights.weight,
                            gg,
                            gb,
                            dx,
                            rows,
                            *channels,
                            *pixels,
                        );
                    }
                }
                // In place, the same mask as forward.
                Layer::Dropout { p } => {
                    if let Mode::Train { step } = mode {
                        b.dropout(g, rows * self.shapes[i].len(), self.dropout_seed(step, i), *p);
                    }
                }
            }
        }
    }
}

/// Extra buffers a layer needs besides its output and gradient.
pub struct Scratch<B: Backend> {
    /// Conv: the im2col matrix `[rows·pixels, C·K·K]` (reused for its gradient); on the CPU,
    /// one chunk's worth per thread (`Backend::conv_scratch_len`).
    pub col: Option<B::Buf>,
    /// Conv: the matmul's output rows `[rows·pixels, O]` (reused for their gradient).
    pub z: Option<B::Buf>,
    /// MaxPool: where each output came from.
    pub argmax: Option<B::Indices>,
    /// BatchNorm: the statistics forward used, `[mean; C]` then `[1/√(var+eps); C]`.
    pub saved: Option<B::Buf>,
}

/// An in-memory split held on the device, uploaded once (see `Backend::holds_data`), and room
/// for one batch's codes.
pub struct DeviceData<B: Backend> {
    pub images: B::Bytes,
    pub labels: B::Indices,
    pub batch: B::Indices,
    /// (channels, height, width)
    pub shape: [usize; 3],
}

impl<B: Backend> DeviceData<B> {
    /// Uploads `split`; an error when it does not fit one of the device's buffers.
    pub fn new(
        b: &mut B,
        split: &crate::data::Split,
        shape: [usize; 3],
        capacity: usize,
    ) -> Result<Self> {
        let sample: usize = shape.iter().product();
        let images = b.alloc_bytes(split.len * sample)?;
        b.write_bytes(&images, &split.images[..split.len * sample]);
        let labels = b.alloc_indices(split.len)?;
        let l: Vec<u32> = split.labels[..split.len].iter().map(|&v| v as u32).collect();
        b.write_indices(&labels, &l);
        let batch = b.alloc_indices(2 * capacity)?;
        Ok(DeviceData { images, labels, batch, shape })
    }
}

/// Buffers one step needs, sized for `capacity` samples and created once per run.
pub struct Workspace<B: Backend> {
    pub capacity: usize,
    pub pixels: B::Bytes,
    pub labels: B::Indices,
    pub input: B::Buf,
    /// Each layer's output (ReLU and Flatten share the buffer of the layer before); the last
    /// holds the logits.
    pub activations: Vec<B::Buf>,
    /// The loss gradient with respect to each layer's output (shared likewise).
    pub grads: Vec<B::Buf>,
    pub scratch: Vec<Scratch<B>>,
    /// The model's input normalisation: `[mean; C][1/std; C]`, channels, pixels.
    normalization: Option<(B::Buf, usize, usize)>,
}

impl<B: Backend> Workspace<B> {
    pub fn new(b: &mut B, model: &Model<B>, capacity: usize) -> Result<Self> {
        // Activations and their gradients for `capacity` samples, f32, counted first.
        let per_sample = model
            .shapes
            .iter()
            .try_fold(model.input_size as u64, |a, s| a.checked_add(2 * s.len() as u64));
        let need = per_sample.and_then(|p| p.checked_mul(4 * capacity as u64));
        let what = format!("a batch of {capacity} through this model (activations and gradients)");
        if let Some(why) = crate::device::memory_shortfall(need, &what) {
            return Err(Error::config("--batch-size", why));
        }
        let input = b.alloc(capacity * model.input_size)?;
        let mut activations: Vec<B::Buf> = Vec::new();
        let mut grads: Vec<B::Buf> = Vec::new();
        let mut scratch = Vec::new();
        for (i, layer) in model.layers.iter().enumerate() {
            let len = capacity * model.shapes[i].len();
            let shares = layer.in_place();
            if shares && i > 0 {
                activations.push(activations[i - 1].clone());
                grads.push(grads[i - 1].clone());
            } else if shares {
                activations.push(input.clone());
                grads.push(b.alloc(len)?);
            } else {
                activations.push(b.alloc(len)?);
                grads.push(b.alloc(len)?);
            }
            // Matmul rows: the batch for a Linear, one per output pixel for a Conv.
            let matmul_rows = match layer {
                Layer::Linear { .. } => capacity,
                Layer::Conv { window, .. } => capacity * window.out_pixels(),
                _ => 0,
            };
            if matmul_rows > b.max_matmul_dim() {
                return Err(Error::Gpu(format!(
                    "layer {i} needs a matmul over {matmul_rows} rows, but this device runs at most {} \
                     (max_compute_workgroups_per_dimension); use a smaller --batch-size",
                    b.max_matmul_dim()
                )));
            }
            let mut s = Scratch { col: None, z: None, argmax: None, saved: None };
            match layer {
                Layer::Conv { window, outputs, .. } => {
                    let (col, z) = b.conv_scratch_len(capacity, window, *outputs);
                    s.col = Some(b.alloc(col)?);
                    s.z = Some(b.alloc(z)?);
                }
                Layer::MaxPool { .. } => s.argmax = Some(b.alloc_indices(len)?),
                Layer::BatchNorm { channels, pixels, .. } => {
                    let per_channel = capacity * pixels;
                    if per_channel > b.max_batchnorm_len() {
                        return Err(Error::Gpu(format!(
                            "layer {i} (batch norm) sums {per_channel} values per channel, but \
                             this adapter's reductions take at most {} (lavapipe ends long \
                             loops early); use a smaller --batch-size or --image-size",
                            b.max_batchnorm_len()
                        )));
                    }
                    s.saved = Some(b.alloc(2 * channels)?);
                }
                _ => {}
            }
            scratch.push(s);
        }
        let normalization = model.normalization.as_ref().map(|(_, _, buf)| {
            (buf.clone(), model.input.channels, model.input.height * model.input.width)
        });
        Ok(Workspace {
            capacity,
            pixels: b.alloc_bytes(capacity * model.input_size)?,
            labels: b.alloc_indices(capacity)?,
            input,
            activations,
            grads,
            scratch,
            normalization,
        })
    }

    /// Assembles a batch on the device from a data set it holds: uploads only `codes` (each
    /// sample's index and augmentation, from `Batcher::next_codes`), then gathers, converts and
    /// normalises there.
    pub fn load_codes(&self, b: &mut B, data: &DeviceData<B>, codes: &[u32]) {
        let rows = codes.len() / 2;
        debug_assert!(rows <= self.capacity);
        b.write_indices(&data.batch, codes);
        b.gather_batch(
            &data.images,
            &data.labels,
            &data.batch,
            &self.input,
            &self.labels,
            rows,
            data.shape,
        );
        self.normalize_input(b, rows);
    }

    /// Uploads a batch of u8 pixels and labels and converts the pixels to f32 on the device.
    pub fn load_batch(&self, b: &mut B, pixels: &[u8], labels: &[u32]) {
        debug_assert!(labels.len() <= self.capacity);
        b.write_bytes(&self.pixels, pixels);
        b.write_indices(&self.labels, labels);
        b.pixels_to_f32(&self.pixels, &self.input, pixels.len());
        self.normalize_input(b, labels.len());
    }

    /// The model's input normalisation over the first `rows` samples of the input, if it has one.
    fn normalize_input(&self, b: &mut B, rows: usize) {
        if let Some((stats, channels, plane)) = &self.normalization {
            b.normalize(&self.input, stats, rows, *channels, *plane);
        }
    }
}
