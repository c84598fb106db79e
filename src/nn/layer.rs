//! One built layer, and a chain of them (a model, or a residual block's body or shortcut): how
//! each kind is built from its spec, and forward and backward over a chain, each kind's work
//! done by its own module.

use crate::backend::{Backend, Window};
use crate::nn::batchnorm::BatchNorm;
use crate::nn::residual::Residual;
use crate::nn::workspace::Buffers;
use crate::nn::{activation, conv, dropout, linear, pool, LayerSpec, Mode, Shape};
use crate::{Error, Result};

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
    pub fn new(b: &mut B, rng: &mut fastrand::Rng, shape: Vec<usize>, bias: bool) -> Result<Self> {
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
    pub fn affine(b: &mut B, channels: usize) -> Result<Self> {
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

    pub fn len(&self) -> usize {
        self.weight_shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Weight and bias values.
    pub fn count(&self) -> usize {
        self.len() + self.bias.as_ref().map_or(0, |_| self.weight_shape[0])
    }
}

/// One built layer. ReLUs right after a Linear or Conv2d are `fused`: that layer applies them.
pub enum Layer<B: Backend> {
    Linear { weights: Weights<B>, inputs: usize, outputs: usize, relu: bool },
    Conv { weights: Weights<B>, window: Window, outputs: usize, relu: bool },
    Relu { fused: bool },
    Flatten,
    MaxPool { window: Window },
    AvgPool { window: Window },
    BatchNorm(BatchNorm<B>),
    Dropout { p: f32 },
    Residual(Box<Residual<B>>),
}

impl<B: Backend> Layer<B> {
    /// The layer's own learnable weights (a residual block's are in its chains).
    pub fn weights(&self) -> Option<&Weights<B>> {
        match self {
            Layer::Linear { weights, .. } | Layer::Conv { weights, .. } => Some(weights),
            Layer::BatchNorm(bn) => Some(&bn.weights),
            _ => None,
        }
    }

    pub fn weights_mut(&mut self) -> Option<&mut Weights<B>> {
        match self {
            Layer::Linear { weights, .. } | Layer::Conv { weights, .. } => Some(weights),
            Layer::BatchNorm(bn) => Some(&mut bn.weights),
            _ => None,
        }
    }

    /// Layers that work in place on the buffers of the layer before.
    pub fn in_place(&self) -> bool {
        matches!(self, Layer::Relu { .. } | Layer::Flatten | Layer::Dropout { .. })
    }

    /// Learnable values, a residual block's included.
    pub fn num_params(&self) -> usize {
        match self {
            Layer::Residual(r) => r.num_params(),
            l => l.weights().map_or(0, Weights::count),
        }
    }
}

/// Layers in order with each one's output shape and id (what dropout masks are drawn from:
/// a model's layers have their positions, a block's layers ids of their own).
pub struct Chain<B: Backend> {
    pub layers: Vec<Layer<B>>,
    pub shapes: Vec<Shape>,
    pub ids: Vec<u64>,
    pub input: Shape,
}

impl<B: Backend> Chain<B> {
    pub fn output(&self) -> Shape {
        *self.shapes.last().unwrap_or(&self.input)
    }

    pub fn num_params(&self) -> usize {
        self.layers.iter().map(Layer::num_params).sum()
    }
}

/// A build error that names the layer (`path`: its position, within blocks too).
pub fn layer_error(path: &str, spec: &LayerSpec, why: String) -> Error {
    Error::config("--model", format!("layer {path} ({spec}): {why}"))
}

/// A square window over `shape`, or `None` when its output would be empty.
fn fitted_window(shape: Shape, kernel: usize, stride: usize, padding: usize) -> Option<Window> {
    let w = Window::square(shape.channels, shape.height, shape.width, kernel, stride, padding);
    (w.out_h() > 0 && w.out_w() > 0).then_some(w)
}

/// What building a chain needs to know besides its layers.
pub struct BuildContext<'a> {
    pub rng: &'a mut fastrand::Rng,
    pub num_classes: usize,
    /// `"3.body."` inside a block, `""` for a model's own layers (for error messages).
    pub path: String,
    /// Ids of this chain's layers are `base + position`.
    pub id_base: u64,
    /// A model's last layer gives the class scores; a block's chains have no such rule.
    pub is_model: bool,
}

/// Builds `specs` on `input`, checking every shape.
pub fn build_chain<B: Backend>(
    b: &mut B,
    specs: &[LayerSpec],
    input: Shape,
    cx: &mut BuildContext<'_>,
) -> Result<Chain<B>> {
    let mut layers = Vec::new();
    let mut shapes = Vec::new();
    let mut ids = Vec::new();
    let mut shape = input;
    let last = specs.len().saturating_sub(1);
    for (position, ls) in specs.iter().enumerate() {
        let next_is_relu = specs.get(position + 1) == Some(&LayerSpec::Relu);
        let path = format!("{}{position}", cx.path);
        let err = |why: String| layer_error(&path, ls, why);
        let id = cx.id_base + position as u64;
        let (layer, out) = match ls {
            LayerSpec::Linear { out } => {
                if (position > 0 || !cx.is_model) && (shape.height != 1 || shape.width != 1) {
                    return Err(err(format!(
                        "takes a flat vector but gets {shape}; put flatten before it"
                    )));
                }
                let inputs = shape.len();
                let outputs = out.unwrap_or(cx.num_classes);
                if cx.is_model && position == last && outputs != cx.num_classes {
                    return Err(err(format!("the last layer gives {outputs} outputs but the data has {} classes; write plain `linear`", cx.num_classes)));
                }
                let weights = Weights::new(b, cx.rng, vec![outputs, inputs], true)?;
                (
                    Layer::Linear { weights, inputs, outputs, relu: next_is_relu },
                    Shape::flat(outputs),
                )
            }
            &LayerSpec::Conv { out, kernel, stride, padding, bias } => {
                let window = fitted_window(shape, kernel, stride, padding).ok_or_else(|| {
                    err(format!(
                        "a {kernel}x{kernel} kernel with padding {padding} does not fit the {}x{} input (output would be empty)",
                        shape.height, shape.width
                    ))
                })?;
                let weights =
                    Weights::new(b, cx.rng, vec![out, shape.channels, kernel, kernel], bias)?;
                let out_shape = Shape::new(out, window.out_h(), window.out_w());
                (Layer::Conv { weights, window, outputs: out, relu: next_is_relu }, out_shape)
            }
            LayerSpec::Relu => {
                let fused = position > 0
                    && matches!(
                        specs[position - 1],
                        LayerSpec::Linear { .. } | LayerSpec::Conv { .. }
                    );
                (Layer::Relu { fused }, shape)
            }
            LayerSpec::Flatten => (Layer::Flatten, Shape::flat(shape.len())),
            &LayerSpec::MaxPool { kernel, stride, .. } | &LayerSpec::AvgPool { kernel, stride } => {
                let padding = match ls {
                    &LayerSpec::MaxPool { padding, .. } => padding,
                    _ => 0,
                };
                let window = fitted_window(shape, kernel, stride, padding).ok_or_else(|| {
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
                let window = pool::global_window(shape.channels, shape.height, shape.width);
                (Layer::AvgPool { window }, Shape::new(shape.channels, 1, 1))
            }
            LayerSpec::BatchNorm => {
                let bn = BatchNorm::new(b, shape.channels, shape.height * shape.width)?;
                (Layer::BatchNorm(bn), shape)
            }
            &LayerSpec::Dropout { p } => (Layer::Dropout { p }, shape),
            LayerSpec::Residual { body, shortcut } => {
                let r = Residual::build(b, body, shortcut.as_deref(), shape, cx, &path, id, ls)?;
                let out = r.output;
                (Layer::Residual(Box::new(r)), out)
            }
        };
        layers.push(layer);
        shapes.push(out);
        ids.push(id);
        shape = out;
    }
    Ok(Chain { layers, shapes, ids, input })
}

/// Forward through `chain` from `x`; each layer's output lands in `bufs.activations`.
pub fn forward_chain<B: Backend>(
    b: &mut B,
    chain: &Chain<B>,
    bufs: &Buffers<B>,
    x: &B::Buf,
    rows: usize,
    mode: Mode,
    seed: u64,
) {
    for (i, layer) in chain.layers.iter().enumerate() {
        let x = if i == 0 { x } else { &bufs.activations[i - 1] };
        let y = &bufs.activations[i];
        let s = &bufs.scratch[i];
        let len = rows * chain.shapes[i].len();
        match layer {
            Layer::Linear { weights, inputs, outputs, relu } => {
                linear::forward(b, weights, [*inputs, *outputs], *relu, x, y, rows)
            }
            Layer::Conv { weights, window, outputs, relu } => {
                let s = s.conv.as_ref().expect("conv scratch");
                conv::forward(b, weights, window, *outputs, *relu, x, y, s, rows)
            }
            // In place: y is x.
            Layer::Relu { fused } => activation::relu_forward(b, *fused, y, len),
            Layer::Flatten => {}
            Layer::MaxPool { window } => {
                let argmax = s.argmax.as_ref().expect("maxpool argmax");
                pool::max_forward(b, window, x, y, argmax, rows)
            }
            Layer::AvgPool { window } => pool::avg_forward(b, window, x, y, rows),
            Layer::BatchNorm(bn) => {
                bn.forward(b, x, y, s.saved.as_ref().expect("batch norm stats"), rows, mode)
            }
            Layer::Dropout { p } => dropout::apply(b, *p, mode, seed, chain.ids[i], y, len),
            Layer::Residual(r) => {
                let rs = s.residual.as_ref().expect("residual buffers");
                r.forward(b, rs, x, y, rows, mode, seed)
            }
        }
    }
}

/// Backward through `chain` from the gradient in the last of `bufs.grads`: fills every
/// parameter's gradient, and the input's into `dx` when given. With `first` > 0 it stops at
/// layer `first`, which computes no input gradient: the layers before it get no gradients
/// (a frozen front of the model, see `Optimizer::first_trained_layer`).
#[allow(clippy::too_many_arguments)]
pub fn backward_chain<B: Backend>(
    b: &mut B,
    chain: &Chain<B>,
    bufs: &Buffers<B>,
    x: &B::Buf,
    dx: Option<&B::Buf>,
    first: usize,
    rows: usize,
    mode: Mode,
    seed: u64,
) {
    for (i, layer) in chain.layers.iter().enumerate().rev().take_while(|&(i, _)| i >= first) {
        let g = &bufs.grads[i];
        let x = if i == 0 { x } else { &bufs.activations[i - 1] };
        let dx = match i {
            0 => dx,
            _ if i == first => None,
            _ => Some(&bufs.grads[i - 1]),
        };
        let s = &bufs.scratch[i];
        let len = rows * chain.shapes[i].len();
        match layer {
            Layer::Linear { weights, inputs, outputs, .. } => {
                linear::backward(b, weights, [*inputs, *outputs], x, g, dx, rows)
            }
            Layer::Conv { weights, window, outputs, .. } => {
                let s = s.conv.as_ref().expect("conv scratch");
                conv::backward(b, weights, window, *outputs, x, g, dx, s, rows)
            }
            // In place: the gradient buffer is shared with the layer before.
            Layer::Relu { .. } => activation::relu_backward(b, g, &bufs.activations[i], len),
            Layer::Flatten => {}
            Layer::MaxPool { window } => {
                let argmax = s.argmax.as_ref().expect("maxpool argmax");
                pool::max_backward(b, window, g, argmax, dx, rows)
            }
            Layer::AvgPool { window } => pool::avg_backward(b, window, g, dx, rows),
            Layer::BatchNorm(bn) => {
                bn.backward(b, x, g, dx, s.saved.as_ref().expect("batch norm stats"), rows)
            }
            Layer::Dropout { p } => dropout::apply(b, *p, mode, seed, chain.ids[i], g, len),
            Layer::Residual(r) => {
                let rs = s.residual.as_ref().expect("residual buffers");
                r.backward(b, rs, x, g, dx, rows, mode, seed)
            }
        }
    }
}
