//! `bn`: `nn.BatchNorm2d` (eps 1e-5, momentum 0.1): batch statistics and running averages while
//! training, the running averages in evaluation. Checkpoints keep `running_mean`, `running_var`
//! and an int64 `num_batches_tracked` beside weight (gamma) and bias (beta).

use std::cell::Cell;

use crate::backend::{Backend, BatchNormHyper, Nchw};
use crate::nn::{Mode, Weights};

/// PyTorch's BatchNorm2d defaults.
const BN_EPS: f32 = 1e-5;
const BN_MOMENTUM: f32 = 0.1;

/// A batch norm layer's state besides its affine weights.
pub struct BatchNorm<B: Backend> {
    pub weights: Weights<B>,
    pub running_mean: B::Buf,
    pub running_var: B::Buf,
    pub tracked: Cell<u64>,
    pub channels: usize,
    /// Values per channel per sample (height × width).
    pub pixels: usize,
}

impl<B: Backend> BatchNorm<B> {
    pub fn new(b: &mut B, channels: usize, pixels: usize) -> crate::Result<Self> {
        let (running_mean, running_var) = (b.alloc(channels)?, b.alloc(channels)?);
        b.write(&running_var, &vec![1.0; channels]);
        Ok(BatchNorm {
            weights: Weights::affine(b, channels)?,
            running_mean,
            running_var,
            tracked: Cell::new(0),
            channels,
            pixels,
        })
    }

    /// `saved` receives the statistics used, `[mean; C]` then `[1/√(var+eps); C]`.
    pub fn forward(
        &self,
        b: &mut B,
        x: &B::Buf,
        y: &B::Buf,
        saved: &B::Buf,
        rows: usize,
        mode: Mode,
    ) {
        let train = matches!(mode, Mode::Train { .. });
        let h = BatchNormHyper { eps: BN_EPS, momentum: BN_MOMENTUM, train };
        let shape = Nchw::new(rows, self.channels, self.pixels);
        b.batchnorm_stats(x, saved, &self.running_mean, &self.running_var, shape, &h);
        if train {
            self.tracked.set(self.tracked.get() + 1);
        }
        let beta = self.weights.bias.as_ref().expect("batch norm has a beta");
        b.batchnorm_forward(x, saved, &self.weights.weight, beta, y, shape);
    }

    pub fn backward(
        &self,
        b: &mut B,
        x: &B::Buf,
        g: &B::Buf,
        dx: Option<&B::Buf>,
        saved: &B::Buf,
        rows: usize,
    ) {
        let w = &self.weights;
        let (gg, gb) = (&w.grad_weight, w.grad_bias.as_ref().expect("batch norm has a beta"));
        let shape = Nchw::new(rows, self.channels, self.pixels);
        b.batchnorm_backward_reduce(x, g, saved, gg, gb, shape);
        if let Some(dx) = dx {
            b.batchnorm_backward(x, g, saved, &w.weight, gg, gb, dx, shape);
        }
    }
}
