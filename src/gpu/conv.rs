//! Conv2d on the GPU. Forward: im2col, then one matmul over the whole batch that stores its
//! rows (output pixels) straight into NCHW with the bias and ReLU (its epilogue), or a separate
//! layout move when the matmul's plan takes several passes. Backward: the layout move, the bias
//! sum, the weight-gradient matmul, and the input gradient as a matmul folded back by col2im.
//!
//! Patches are padded to whole vec4s (`Window::col_width`), so the first conv of a model (25 or
//! 27 values per patch) still runs on the vec4 matmul kernels; its weights are padded the same
//! way into a scratch buffer before use, and the weight gradient is trimmed back. Later convs
//! (patches of 32·9, 32·25, …) need no padding and use the weights as they are.

use crate::backend::{Backend, MatmulForm, Nchw, Window};

use super::{Epilogue, GpuBackend, GpuBuf};

impl GpuBackend {
    /// The weights as the matmuls read them: `weight` itself, or a copy padded to the im2col
    /// width in the conv scratch.
    fn conv_weights(&mut self, weight: &GpuBuf, w: &Window, outputs: usize) -> GpuBuf {
        let (patch, width) = (w.patch_len(), w.col_width());
        if width == patch {
            return weight.clone();
        }
        let padded = self.conv_scratch(outputs * width);
        self.copy_rows(weight, &padded, outputs, patch, patch, width);
        padded
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_forward(
        &mut self,
        x: &GpuBuf,
        weight: &GpuBuf,
        bias: Option<&GpuBuf>,
        y: &GpuBuf,
        col: &GpuBuf,
        z: &GpuBuf,
        rows: usize,
        w: &Window,
        outputs: usize,
        relu: bool,
    ) {
        let pixels = w.out_pixels();
        let weights = self.conv_weights(weight, w, outputs);
        self.im2col(x, col, rows, w);
        let (m, k) = (rows * pixels, w.col_width());
        if self.epilogue_fits(MatmulForm::ABt, m, k, outputs) {
            // The matmul stores straight into NCHW, adding the bias and applying the ReLU.
            let e = Epilogue { bias, relu, nchw_pixels: pixels };
            self.matmul_with(MatmulForm::ABt, col, &weights, y, m, k, outputs, Some(e));
        } else {
            self.matmul(MatmulForm::ABt, col, &weights, z, m, k, outputs);
            self.to_channels_first(z, bias, y, Nchw::new(rows, outputs, pixels), relu);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_backward(
        &mut self,
        dy: &GpuBuf,
        weight: &GpuBuf,
        grad_weight: &GpuBuf,
        grad_bias: Option<&GpuBuf>,
        dx: Option<&GpuBuf>,
        col: &GpuBuf,
        z: &GpuBuf,
        rows: usize,
        w: &Window,
        outputs: usize,
    ) {
        let (patch, width) = (w.patch_len(), w.col_width());
        let m = rows * w.out_pixels();
        // dZ (one row per output pixel) reuses z; dW = dZᵀ · col; then dcol = dZ · W overwrites
        // col, and col2im folds it back onto the input.
        self.to_channels_last(dy, z, Nchw::new(rows, outputs, w.out_pixels()));
        if let Some(gb) = grad_bias {
            self.bias_grad(z, gb, m, outputs);
        }
        if width == patch {
            self.matmul(MatmulForm::AtB, z, col, grad_weight, outputs, m, patch);
        } else {
            let padded = self.conv_scratch(outputs * width);
            self.matmul(MatmulForm::AtB, z, col, &padded, outputs, m, width);
            self.copy_rows(&padded, grad_weight, outputs, patch, width, patch);
        }
        if let Some(dx) = dx {
            // Padded again: the weight gradient just used the scratch.
            let weights = self.conv_weights(weight, w, outputs);
            self.matmul(MatmulForm::AB, z, &weights, col, m, outputs, width);
            self.col2im(col, dx, rows, w);
        }
    }
}
