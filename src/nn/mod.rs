//! Models: the spec a user types (`lenet`, `mlp:256`, `conv:32:5,relu,...`,
//! `res(conv:16:3:p=1,bn,relu,conv:16:3:p=1,bn)`), the layers it builds (an `nn.Sequential`,
//! with residual blocks as modules of their own), and forward and backward passes written once
//! over [`Backend`].
//!
//! This file is the driver; each layer kind has its own file (`linear.rs`, `conv.rs`,
//! `pool.rs`, `batchnorm.rs`, `activation.rs`, `dropout.rs`, `residual.rs`) with its forward
//! and backward; `layer.rs` builds layers from their specs and runs a chain of them;
//! `workspace.rs` holds the step's buffers; `state_dict.rs` the PyTorch names.

mod activation;
mod batchnorm;
mod conv;
mod dropout;
mod layer;
mod linear;
mod pool;
mod residual;
mod spec;
mod state_dict;
mod workspace;

pub use batchnorm::BatchNorm;
pub use conv::ConvScratch;
pub use layer::{Chain, Layer, Weights};
pub use residual::{Residual, ResidualBuffers};
pub use spec::{torchvision_name, LayerSpec, ModelSpec, GRAMMAR, PRESETS};
pub use state_dict::sort_state_dict;
pub use workspace::{Buffers, DeviceData, Scratch, Workspace};

use std::fmt;

use crate::backend::{Backend, MatmulForm};
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

impl From<crate::data::ImageShape> for Shape {
    fn from(s: crate::data::ImageShape) -> Self {
        Shape::new(s.channels, s.height, s.width)
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

/// A parameter tensor as the optimizer and checkpoints see it.
pub struct Param<'a, B: Backend> {
    /// PyTorch `state_dict` name: the layer's position in the `nn.Sequential`, then the field
    /// (`3.body.0.weight` inside a residual block).
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

/// Calls `f` on every layer's weights in `state_dict` order, residual blocks' included.
fn for_each_weights_mut<B: Backend>(chain: &mut Chain<B>, f: &mut impl FnMut(&mut Weights<B>)) {
    for layer in &mut chain.layers {
        if let Some(w) = layer.weights_mut() {
            f(w);
        }
        if let Layer::Residual(r) = layer {
            for_each_weights_mut(&mut r.body, f);
            if let Some(s) = &mut r.shortcut {
                for_each_weights_mut(s, f);
            }
        }
    }
}

/// Moves every parameter (values as built) and gradient of `chain` into an arena each, in
/// `state_dict` order; `None`, leaving them apart, when the arenas cannot be allocated.
fn pack_params<B: Backend>(b: &mut B, chain: &mut Chain<B>) -> Option<ParamArena<B>> {
    let mut lens = Vec::new();
    for_each_weights_mut(chain, &mut |w| {
        lens.push(w.len());
        if w.bias.is_some() {
            lens.push(w.weight_shape[0]);
        }
    });
    if lens.is_empty() {
        return None;
    }
    let values = b.alloc_arena(&lens).ok()?;
    let grads = b.alloc_arena(&lens).ok()?;
    let starts = values.starts.clone();
    let mut views = values.views.into_iter().zip(grads.views);
    for_each_weights_mut(chain, &mut |w| {
        let mut take = |value: &mut B::Buf, grad: &mut B::Buf, len: usize| {
            let (v, g) = views.next().expect("a view per parameter");
            // A transfer, not a kernel: no bind group keeps the old buffer alive.
            b.copy(value, &v, len);
            (*value, *grad) = (v, g);
        };
        let len = w.len();
        take(&mut w.weight, &mut w.grad_weight, len);
        if let (Some(bias), Some(grad)) = (&mut w.bias, &mut w.grad_bias) {
            take(bias, grad, w.weight_shape[0]);
        }
    });
    Some(ParamArena { values: values.whole, grads: grads.whole, len: values.len, lens, starts })
}

/// A model over a backend: a chain of layers, the last giving the class scores.
pub struct Model<B: Backend> {
    pub spec: ModelSpec,
    pub input: Shape,
    /// Values per input sample (`input.len()`).
    pub input_size: usize,
    pub num_classes: usize,
    /// The layers, each one's output shape, and the ids dropout masks are drawn from.
    pub chain: Chain<B>,
    /// Seeds the dropout masks (with the step and the layer's id).
    pub seed: u64,
    /// Per-channel input normalisation applied after `pixels_to_f32`: `(means, stds)` and the
    /// device copy `[mean; C][1/std; C]`.
    pub normalization: Option<(Vec<f32>, Vec<f32>, B::Buf)>,
    /// Label smoothing ε of the training loss ([`Model::train_loss`]); evaluation always
    /// reports plain cross-entropy, so test losses compare across runs.
    pub label_smoothing: f32,
    /// Every parameter and every gradient in one arena each (`None` when an arena would not
    /// fit one of the device's buffers: then they stay apart).
    pub arena: Option<ParamArena<B>>,
}

/// A model's parameters in one allocation and their gradients in another, laid out alike
/// ([`Backend::alloc_arena`]): each layer's tensors are views into them, and the optimizer
/// updates the whole arena in one call instead of one per tensor. The padding between tensors
/// stays 0 (no gradient is written there, so no update moves it).
pub struct ParamArena<B: Backend> {
    pub values: B::Buf,
    pub grads: B::Buf,
    /// The arenas' length, padding included.
    pub len: usize,
    /// Each parameter's length and start, in `state_dict` order (the layout the optimizer's
    /// state copies).
    pub lens: Vec<usize>,
    pub starts: Vec<usize>,
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
        let mut cx = layer::BuildContext {
            rng: &mut rng,
            num_classes,
            path: String::new(),
            id_base: 0,
            is_model: true,
        };
        let mut chain = layer::build_chain(b, &spec.layers, input, &mut cx)?;
        let arena = pack_params(b, &mut chain);
        Ok(Model {
            spec: spec.clone(),
            input,
            input_size: input.len(),
            num_classes,
            chain,
            seed,
            normalization: None,
            label_smoothing: 0.0,
            arena,
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
        state_dict::params(&self.chain, self.rename())
    }

    /// Calls `f(index, value, grad, len)` for every parameter in `state_dict` order: what the
    /// optimizer walks each step, so it builds no names and allocates nothing.
    pub fn for_each_param(&self, mut f: impl FnMut(usize, &B::Buf, &B::Buf, usize)) {
        fn walk<B: Backend>(
            chain: &Chain<B>,
            next: &mut usize,
            f: &mut impl FnMut(usize, &B::Buf, &B::Buf, usize),
        ) {
            for layer in &chain.layers {
                if let Some(w) = layer.weights() {
                    f(*next, &w.weight, &w.grad_weight, w.len());
                    *next += 1;
                    if let (Some(b), Some(g)) = (&w.bias, &w.grad_bias) {
                        f(*next, b, g, w.weight_shape[0]);
                        *next += 1;
                    }
                }
                if let Layer::Residual(r) = layer {
                    walk(&r.body, next, f);
                    if let Some(s) = &r.shortcut {
                        walk(s, next, f);
                    }
                }
            }
        }
        walk(&self.chain, &mut 0, &mut f);
    }

    pub fn num_params(&self) -> usize {
        self.chain.num_params()
    }

    /// Every matmul one training step over `rows` samples runs on the GPU, as `(form, m, k, n,
    /// what)`: the shapes kernels must be right (and fast) at. A conv's K is its patch padded to
    /// whole vec4s (`Window::col_width`: 28 for a 5×5 first conv), as the GPU runs it. The first
    /// layer's input gradient is never computed, so it is left out.
    pub fn matmul_shapes(&self, rows: usize) -> Vec<(MatmulForm, usize, usize, usize, String)> {
        let mut out = Vec::new();
        state_dict::visit(&self.chain, "", &mut |prefix, layer| {
            let (m, k, n) = match layer {
                Layer::Linear { inputs, outputs, .. } => (rows, *inputs, *outputs),
                Layer::Conv { window, outputs, .. } => {
                    (rows * window.out_pixels(), window.col_width(), *outputs)
                }
                _ => return,
            };
            let name = prefix.trim_end_matches('.');
            // Forward Y = X·Wᵀ, weight gradient dW = dYᵀ·X, input gradient dX = dY·W.
            out.push((MatmulForm::ABt, m, k, n, format!("layer {name} forward")));
            out.push((MatmulForm::AtB, n, m, k, format!("layer {name} weight gradient")));
            if name != "0" {
                out.push((MatmulForm::AB, m, n, k, format!("layer {name} input gradient")));
            }
        });
        out
    }

    /// Each layer with its output shape and parameter count, for the summary printed before
    /// training.
    pub fn summary(&self) -> Vec<SummaryRow> {
        self.chain
            .layers
            .iter()
            .enumerate()
            .map(|(position, layer)| SummaryRow {
                position,
                layer: self.spec.layers[position].to_string(),
                output: self.chain.shapes[position],
                params: layer.num_params(),
            })
            .collect()
    }

    /// Forward pass over the first `rows` samples in `ws.input`; logits end in `ws.logits()`.
    pub fn forward(&self, b: &mut B, ws: &Workspace<B>, rows: usize, mode: Mode) {
        layer::forward_chain(b, &self.chain, &ws.bufs, &ws.input, rows, mode, self.seed);
    }

    /// The cross-entropy loss on the logits of the last forward pass: writes the logits'
    /// gradient and adds loss sum and correct count into `stats`.
    pub fn loss(&self, b: &mut B, ws: &Workspace<B>, stats: &B::Buf, rows: usize) {
        self.loss_on(b, ws, ws.logits(), stats, rows);
    }

    /// [`Model::loss`] on other logits for the batch `ws` holds (test-time augmentation's mean).
    pub fn loss_on(
        &self,
        b: &mut B,
        ws: &Workspace<B>,
        logits: &B::Buf,
        stats: &B::Buf,
        rows: usize,
    ) {
        let last = ws.bufs.grads.last().expect("a model has layers");
        b.softmax_xent(logits, &ws.labels, last, stats, rows, self.num_classes, 0.0);
    }

    /// [`Model::loss`] with the model's label smoothing: what training descends.
    pub fn train_loss(&self, b: &mut B, ws: &Workspace<B>, stats: &B::Buf, rows: usize) {
        let last = ws.bufs.grads.last().expect("a model has layers");
        let eps = self.label_smoothing;
        b.softmax_xent(ws.logits(), &ws.labels, last, stats, rows, self.num_classes, eps);
    }

    /// Backward pass from the logits' gradient: fills every parameter's gradient. The input's
    /// gradient is never needed, so the first layer skips it.
    pub fn backward(&self, b: &mut B, ws: &Workspace<B>, rows: usize, mode: Mode) {
        self.backward_from(b, ws, rows, mode, 0);
    }

    /// Backward pass down to top-level layer `first` only: the gradients of the parameters in
    /// the layers from `first` on (a model whose front is frozen needs no more; see
    /// `Optimizer::first_trained_layer`). The others' gradients are left as they are.
    pub fn backward_from(
        &self,
        b: &mut B,
        ws: &Workspace<B>,
        rows: usize,
        mode: Mode,
        first: usize,
    ) {
        let (chain, bufs, seed) = (&self.chain, &ws.bufs, self.seed);
        layer::backward_chain(b, chain, bufs, &ws.input, None, first, rows, mode, seed);
    }

    /// The top-level layer each parameter is in, in `for_each_param`'s order.
    pub fn param_layers(&self) -> Vec<usize> {
        fn params<B: Backend>(layer: &Layer<B>) -> usize {
            let weights = layer.weights().map_or(0, |w| 1 + w.bias.is_some() as usize);
            let inner = match layer {
                Layer::Residual(r) => {
                    let chains = std::iter::once(&r.body).chain(&r.shortcut);
                    chains.flat_map(|c| &c.layers).map(params).sum()
                }
                _ => 0,
            };
            weights + inner
        }
        let per_layer = self.chain.layers.iter().map(params);
        per_layer.enumerate().flat_map(|(i, n)| std::iter::repeat_n(i, n)).collect()
    }
}
