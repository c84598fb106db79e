//! Models: the spec a user types (`linear`, `mlp:256,128`), the layers it builds, and forward and
//! backward passes written once over [`Backend`].

mod spec;

pub use spec::ModelSpec;

use crate::backend::{Backend, MatmulForm};
use crate::{Error, Result};

/// A fully connected layer with PyTorch's `nn.Linear` layout: weight `[out, in]`, bias `[out]`.
pub struct Linear<B: Backend> {
    pub in_features: usize,
    pub out_features: usize,
    pub weight: B::Buf,
    pub bias: B::Buf,
    pub grad_weight: B::Buf,
    pub grad_bias: B::Buf,
    /// A ReLU follows this layer (every layer but the last).
    pub relu: bool,
}

/// A parameter tensor as the optimizer and checkpoints see it.
pub struct Param<'a, B: Backend> {
    /// PyTorch `state_dict` name: the layer's position in the equivalent `nn.Sequential`.
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

/// A multilayer perceptron: Linear, ReLU, Linear, ReLU, ..., Linear (logits).
pub struct Model<B: Backend> {
    pub spec: ModelSpec,
    pub input_size: usize,
    pub num_classes: usize,
    pub layers: Vec<Linear<B>>,
}

/// Host-side tensors by `state_dict` name, in model order.
pub type HostTensors = Vec<(String, Vec<usize>, Vec<f32>)>;

impl<B: Backend> Model<B> {
    /// Builds the model with PyTorch's default `nn.Linear` init (uniform ±1/√fan_in for weight
    /// and bias), drawn on the host from `seed` so every backend starts from the same numbers.
    pub fn new(
        backend: &mut B,
        spec: &ModelSpec,
        input_size: usize,
        num_classes: usize,
        seed: u64,
    ) -> Result<Self> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut layers = Vec::new();
        let sizes = spec.layer_sizes(input_size, num_classes)?;
        let last = sizes.len() - 1;
        for (i, &(fan_in, fan_out)) in sizes.iter().enumerate() {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let mut uniform = |n: usize| -> Vec<f32> {
                (0..n).map(|_| (rng.f32() * 2.0 - 1.0) * bound).collect()
            };
            let w = uniform(fan_in * fan_out);
            let b = uniform(fan_out);
            let layer = Linear {
                in_features: fan_in,
                out_features: fan_out,
                weight: backend.alloc(w.len())?,
                bias: backend.alloc(b.len())?,
                grad_weight: backend.alloc(w.len())?,
                grad_bias: backend.alloc(b.len())?,
                relu: i != last,
            };
            backend.write(&layer.weight, &w);
            backend.write(&layer.bias, &b);
            layers.push(layer);
        }
        Ok(Model { spec: spec.clone(), input_size, num_classes, layers })
    }

    /// Every parameter with its gradient, in `state_dict` order.
    pub fn params(&self) -> Vec<Param<'_, B>> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let position = 2 * i; // Linear, ReLU, Linear, ...
            out.push(Param {
                name: format!("{position}.weight"),
                shape: vec![l.out_features, l.in_features],
                value: &l.weight,
                grad: &l.grad_weight,
            });
            out.push(Param {
                name: format!("{position}.bias"),
                shape: vec![l.out_features],
                value: &l.bias,
                grad: &l.grad_bias,
            });
        }
        out
    }

    /// `(value, grad, len)` of every parameter in `state_dict` order, without allocating: what
    /// the optimizer walks each step.
    pub fn param_buffers(&self) -> impl Iterator<Item = (&B::Buf, &B::Buf, usize)> {
        self.layers.iter().flat_map(|l| {
            [
                (&l.weight, &l.grad_weight, l.in_features * l.out_features),
                (&l.bias, &l.grad_bias, l.out_features),
            ]
        })
    }

    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.len()).sum()
    }

    /// Reads every parameter back to the host (for checkpoints and tests).
    pub fn export(&self, backend: &mut B) -> Result<HostTensors> {
        let mut out = Vec::new();
        for p in self.params() {
            let values = backend.read(p.value, p.len())?;
            out.push((p.name.clone(), p.shape.clone(), values));
        }
        Ok(out)
    }

    /// Loads parameters by name; every tensor must be present with the model's shape.
    /// `source` names the file in error messages.
    pub fn import(&self, backend: &mut B, tensors: &HostTensors, source: &str) -> Result<()> {
        for p in self.params() {
            let Some((_, shape, values)) = tensors.iter().find(|(n, _, _)| *n == p.name) else {
                return Err(Error::file(
                    source,
                    format!(
                        "tensor {:?} (shape {:?}) is missing; model {} expects {}",
                        p.name,
                        p.shape,
                        self.spec,
                        self.params().iter().map(|p| p.name.clone()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            };
            if *shape != p.shape {
                return Err(Error::file(
                    source,
                    format!(
                        "tensor {:?} has shape {:?}, but model {} with {} inputs and {} classes \
                         needs {:?}",
                        p.name, shape, self.spec, self.input_size, self.num_classes, p.shape
                    ),
                ));
            }
            backend.write(p.value, values);
        }
        let expected: Vec<String> = self.params().iter().map(|p| p.name.clone()).collect();
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
    pub fn forward(&self, backend: &mut B, ws: &Workspace<B>, rows: usize) {
        for (i, l) in self.layers.iter().enumerate() {
            let x = if i == 0 { &ws.input } else { &ws.activations[i - 1] };
            let y = &ws.activations[i];
            backend.matmul(MatmulForm::ABt, x, &l.weight, y, rows, l.in_features, l.out_features);
            backend.add_bias(y, &l.bias, rows, l.out_features, l.relu);
        }
    }

    /// The loss on the logits of the last forward pass: writes the logits' gradient and adds
    /// loss sum and correct count into `stats`.
    pub fn loss(&self, backend: &mut B, ws: &Workspace<B>, stats: &B::Buf, rows: usize) {
        let last = self.layers.len() - 1;
        backend.softmax_xent(
            &ws.activations[last],
            &ws.labels,
            &ws.grads[last],
            stats,
            rows,
            self.num_classes,
        );
    }

    /// Backward pass from the logits' gradient: fills every layer's `grad_weight` and `grad_bias`.
    /// The input's gradient is never needed, so the first layer skips it.
    pub fn backward(&self, backend: &mut B, ws: &Workspace<B>, rows: usize) {
        for (i, l) in self.layers.iter().enumerate().rev() {
            let g = &ws.grads[i];
            let x = if i == 0 { &ws.input } else { &ws.activations[i - 1] };
            backend.bias_grad(g, &l.grad_bias, rows, l.out_features);
            // dW[out, in] = dYᵀ · X
            backend.matmul(
                MatmulForm::AtB,
                g,
                x,
                &l.grad_weight,
                l.out_features,
                rows,
                l.in_features,
            );
            if i > 0 {
                // dX[rows, in] = dY · W, then through the previous layer's ReLU.
                let dx = &ws.grads[i - 1];
                backend.matmul(
                    MatmulForm::AB,
                    g,
                    &l.weight,
                    dx,
                    rows,
                    l.out_features,
                    l.in_features,
                );
                backend.relu_backward(dx, &ws.activations[i - 1], rows * l.in_features);
            }
        }
    }
}

/// Buffers one step needs, sized for `capacity` samples and created once per run.
pub struct Workspace<B: Backend> {
    pub capacity: usize,
    pub pixels: B::Bytes,
    pub labels: B::Indices,
    pub input: B::Buf,
    /// Each layer's output (after its ReLU, when it has one); the last holds the logits.
    pub activations: Vec<B::Buf>,
    /// The loss gradient with respect to each layer's output (pre-ReLU once masked).
    pub grads: Vec<B::Buf>,
}

impl<B: Backend> Workspace<B> {
    pub fn new(backend: &mut B, model: &Model<B>, capacity: usize) -> Result<Self> {
        let mut activations = Vec::new();
        let mut grads = Vec::new();
        for l in &model.layers {
            activations.push(backend.alloc(capacity * l.out_features)?);
            grads.push(backend.alloc(capacity * l.out_features)?);
        }
        Ok(Workspace {
            capacity,
            pixels: backend.alloc_bytes(capacity * model.input_size)?,
            labels: backend.alloc_indices(capacity)?,
            input: backend.alloc(capacity * model.input_size)?,
            activations,
            grads,
        })
    }

    /// Uploads a batch of u8 pixels and labels and converts the pixels to f32 on the device.
    pub fn load_batch(&self, backend: &mut B, pixels: &[u8], labels: &[u32]) {
        debug_assert!(labels.len() <= self.capacity);
        backend.write_bytes(&self.pixels, pixels);
        backend.write_indices(&self.labels, labels);
        backend.pixels_to_f32(&self.pixels, &self.input, pixels.len());
    }
}
