//! The CPU reference backend on ndarray. Each op is a plain function over slices in the file named
//! like its WGSL twin (`matmul.rs` ↔ `shaders/matmul.wgsl`, ...); `CpuBackend` only routes the
//! trait's buffer handles to them.

pub mod batchnorm;
pub mod conv;
pub mod elementwise;
pub mod loss;
pub mod matmul;
pub mod optim;
pub mod parallel;
pub mod pool;
pub mod reduce;

use std::cell::RefCell;
use std::rc::Rc;

use crate::backend::{
    AdamHyper, Backend, BatchNormHyper, MatmulForm, Nchw, RmspropHyper, SgdHyper, Window,
};
use crate::Result;

/// A CPU tensor: shared so that layers and the workspace can hold the same storage.
#[derive(Clone, Debug, Default)]
pub struct CpuBuf(Rc<RefCell<Vec<f32>>>);

impl CpuBuf {
    pub fn to_vec(&self) -> Vec<f32> {
        self.0.borrow().clone()
    }
}

#[derive(Debug, Default)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend
    }
}

impl Backend for CpuBackend {
    type Buf = CpuBuf;
    type Bytes = RefCell<Vec<u8>>;
    type Indices = RefCell<Vec<u32>>;

    fn device_name(&self) -> String {
        "cpu".to_string()
    }

    fn alloc(&mut self, len: usize) -> Result<CpuBuf> {
        Ok(CpuBuf(Rc::new(RefCell::new(vec![0.0; len]))))
    }
    fn alloc_bytes(&mut self, len: usize) -> Result<Self::Bytes> {
        Ok(RefCell::new(vec![0; len]))
    }
    fn alloc_indices(&mut self, len: usize) -> Result<Self::Indices> {
        Ok(RefCell::new(vec![0; len]))
    }

    fn write(&mut self, dst: &CpuBuf, data: &[f32]) {
        dst.0.borrow_mut()[..data.len()].copy_from_slice(data);
    }
    fn write_bytes(&mut self, dst: &Self::Bytes, data: &[u8]) {
        dst.borrow_mut()[..data.len()].copy_from_slice(data);
    }
    fn write_indices(&mut self, dst: &Self::Indices, data: &[u32]) {
        dst.borrow_mut()[..data.len()].copy_from_slice(data);
    }
    fn fill_zero(&mut self, dst: &CpuBuf) {
        dst.0.borrow_mut().fill(0.0);
    }
    fn read(&mut self, src: &CpuBuf, len: usize) -> Result<Vec<f32>> {
        Ok(src.0.borrow()[..len].to_vec())
    }
    fn submit(&mut self) {}

    fn pixels_to_f32(&mut self, src: &Self::Bytes, dst: &CpuBuf, len: usize) {
        elementwise::pixels_to_f32(&src.borrow()[..len], &mut dst.0.borrow_mut()[..len]);
    }

    fn matmul(
        &mut self,
        form: MatmulForm,
        a: &CpuBuf,
        b: &CpuBuf,
        c: &CpuBuf,
        m: usize,
        k: usize,
        n: usize,
    ) {
        let (a, b) = (a.0.borrow(), b.0.borrow());
        matmul::matmul(form, &a, &b, &mut c.0.borrow_mut(), m, k, n);
    }

    fn add_bias(&mut self, x: &CpuBuf, bias: &CpuBuf, rows: usize, cols: usize, relu: bool) {
        let bias = bias.0.borrow();
        let mut x = x.0.borrow_mut();
        let x = &mut x[..rows * cols];
        if relu {
            elementwise::add_bias_relu(x, &bias[..cols]);
        } else {
            elementwise::add_bias(x, &bias[..cols]);
        }
    }

    fn normalize(&mut self, x: &CpuBuf, stats: &CpuBuf, shape: Nchw) {
        let stats = stats.0.borrow();
        elementwise::normalize(
            &mut x.0.borrow_mut()[..shape.len()],
            &stats,
            shape.channels,
            shape.pixels,
        );
    }

    fn relu(&mut self, x: &CpuBuf, len: usize) {
        elementwise::relu(&mut x.0.borrow_mut()[..len]);
    }

    fn scale(&mut self, x: &CpuBuf, len: usize, factor: f32) {
        elementwise::scale(&mut x.0.borrow_mut()[..len], factor);
    }

    fn add(&mut self, a: &CpuBuf, b: &CpuBuf, out: &CpuBuf, len: usize) {
        let (a, b) = (a.0.borrow(), b.0.borrow());
        elementwise::add(&a[..len], &b[..len], &mut out.0.borrow_mut()[..len]);
    }

    fn gather_batch(
        &mut self,
        images: &Self::Bytes,
        held: std::ops::Range<usize>,
        labels: &Self::Indices,
        batch: &Self::Indices,
        input: &CpuBuf,
        labels_out: &Self::Indices,
        rows: usize,
        shape: [usize; 3],
    ) {
        elementwise::gather_batch(
            &images.borrow(),
            held,
            &labels.borrow(),
            &batch.borrow(),
            &mut input.0.borrow_mut(),
            &mut labels_out.borrow_mut(),
            rows,
            shape,
        );
    }

    fn copy_rows(
        &mut self,
        src: &CpuBuf,
        dst: &CpuBuf,
        rows: usize,
        cols: usize,
        src_width: usize,
        dst_width: usize,
    ) {
        let src = src.0.borrow();
        elementwise::copy_rows(&src, &mut dst.0.borrow_mut(), rows, cols, src_width, dst_width);
    }

    fn im2col(&mut self, x: &CpuBuf, col: &CpuBuf, rows: usize, w: &Window) {
        conv::im2col(&x.0.borrow(), &mut col.0.borrow_mut(), rows, w);
    }

    fn col2im(&mut self, col: &CpuBuf, x: &CpuBuf, rows: usize, w: &Window) {
        conv::col2im(&col.0.borrow(), &mut x.0.borrow_mut(), rows, w);
    }

    fn to_channels_first(
        &mut self,
        z: &CpuBuf,
        bias: Option<&CpuBuf>,
        y: &CpuBuf,
        shape: Nchw,
        relu: bool,
    ) {
        let bias = bias.map(|b| b.0.borrow());
        conv::to_channels_first(
            &z.0.borrow(),
            bias.as_deref().map(|b| &b[..]),
            &mut y.0.borrow_mut(),
            shape,
            relu,
        );
    }

    fn to_channels_last(&mut self, y: &CpuBuf, z: &CpuBuf, shape: Nchw) {
        conv::to_channels_last(&y.0.borrow(), &mut z.0.borrow_mut(), shape);
    }

    fn conv2d_forward(
        &mut self,
        x: &CpuBuf,
        weight: &CpuBuf,
        bias: Option<&CpuBuf>,
        y: &CpuBuf,
        col: &CpuBuf,
        _z: &CpuBuf,
        rows: usize,
        w: &Window,
        outputs: usize,
        relu: bool,
    ) {
        let bias = bias.map(|b| b.0.borrow());
        conv::conv2d_forward(
            &x.0.borrow(),
            &weight.0.borrow(),
            bias.as_deref().map(|b| &b[..]),
            &mut y.0.borrow_mut(),
            &mut col.0.borrow_mut(),
            rows,
            w,
            outputs,
            relu,
        );
    }

    fn conv_scratch_len(&self, rows: usize, w: &Window, outputs: usize) -> (usize, usize) {
        conv::scratch_len(rows, w, outputs)
    }

    fn conv2d_backward(
        &mut self,
        x: &CpuBuf,
        dy: &CpuBuf,
        weight: &CpuBuf,
        grad_weight: &CpuBuf,
        grad_bias: Option<&CpuBuf>,
        dx: Option<&CpuBuf>,
        col: &CpuBuf,
        z: &CpuBuf,
        rows: usize,
        w: &Window,
        outputs: usize,
    ) {
        let mut grad_bias = grad_bias.map(|b| b.0.borrow_mut());
        let mut dx = dx.map(|d| d.0.borrow_mut());
        conv::conv2d_backward(
            &x.0.borrow(),
            &dy.0.borrow(),
            &weight.0.borrow(),
            &mut grad_weight.0.borrow_mut(),
            grad_bias.as_deref_mut().map(|b| &mut b[..]),
            dx.as_deref_mut().map(|d| &mut d[..]),
            &mut col.0.borrow_mut(),
            &mut z.0.borrow_mut(),
            rows,
            w,
            outputs,
        );
    }

    fn maxpool(&mut self, x: &CpuBuf, y: &CpuBuf, argmax: &Self::Indices, rows: usize, w: &Window) {
        pool::maxpool(&x.0.borrow(), &mut y.0.borrow_mut(), &mut argmax.borrow_mut(), rows, w);
    }

    fn maxpool_backward(
        &mut self,
        dy: &CpuBuf,
        argmax: &Self::Indices,
        dx: &CpuBuf,
        rows: usize,
        w: &Window,
    ) {
        pool::maxpool_backward(&dy.0.borrow(), &argmax.borrow(), &mut dx.0.borrow_mut(), rows, w);
    }

    fn avgpool(&mut self, x: &CpuBuf, y: &CpuBuf, rows: usize, w: &Window) {
        pool::avgpool(&x.0.borrow(), &mut y.0.borrow_mut(), rows, w);
    }

    fn avgpool_backward(&mut self, dy: &CpuBuf, dx: &CpuBuf, rows: usize, w: &Window) {
        pool::avgpool_backward(&dy.0.borrow(), &mut dx.0.borrow_mut(), rows, w);
    }

    fn batchnorm_stats(
        &mut self,
        x: &CpuBuf,
        saved: &CpuBuf,
        running_mean: &CpuBuf,
        running_var: &CpuBuf,
        shape: Nchw,
        h: &BatchNormHyper,
    ) {
        batchnorm::batchnorm_stats(
            &x.0.borrow(),
            &mut saved.0.borrow_mut(),
            &mut running_mean.0.borrow_mut(),
            &mut running_var.0.borrow_mut(),
            shape,
            h,
        );
    }

    fn batchnorm_forward(
        &mut self,
        x: &CpuBuf,
        saved: &CpuBuf,
        gamma: &CpuBuf,
        beta: &CpuBuf,
        y: &CpuBuf,
        shape: Nchw,
    ) {
        let (x, saved, gamma, beta) =
            (x.0.borrow(), saved.0.borrow(), gamma.0.borrow(), beta.0.borrow());
        batchnorm::batchnorm_forward(&x, &saved, &gamma, &beta, &mut y.0.borrow_mut(), shape);
    }

    fn batchnorm_backward_reduce(
        &mut self,
        x: &CpuBuf,
        dy: &CpuBuf,
        saved: &CpuBuf,
        grad_gamma: &CpuBuf,
        grad_beta: &CpuBuf,
        shape: Nchw,
    ) {
        let (x, dy, saved) = (x.0.borrow(), dy.0.borrow(), saved.0.borrow());
        batchnorm::batchnorm_backward_reduce(
            &x,
            &dy,
            &saved,
            &mut grad_gamma.0.borrow_mut(),
            &mut grad_beta.0.borrow_mut(),
            shape,
        );
    }

    fn batchnorm_backward(
        &mut self,
        x: &CpuBuf,
        dy: &CpuBuf,
        saved: &CpuBuf,
        gamma: &CpuBuf,
        grad_gamma: &CpuBuf,
        grad_beta: &CpuBuf,
        dx: &CpuBuf,
        shape: Nchw,
    ) {
        let (x, dy, saved, gamma) =
            (x.0.borrow(), dy.0.borrow(), saved.0.borrow(), gamma.0.borrow());
        let (gg, gb) = (grad_gamma.0.borrow(), grad_beta.0.borrow());
        batchnorm::batchnorm_backward(
            &x,
            &dy,
            &saved,
            &gamma,
            &gg,
            &gb,
            &mut dx.0.borrow_mut(),
            shape,
        );
    }

    fn dropout(&mut self, x: &CpuBuf, len: usize, seed: u32, p: f32) {
        elementwise::dropout(&mut x.0.borrow_mut()[..len], seed, p);
    }

    fn relu_backward(&mut self, grad: &CpuBuf, activation: &CpuBuf, len: usize) {
        let act = activation.0.borrow();
        elementwise::relu_backward(&mut grad.0.borrow_mut()[..len], &act[..len]);
    }

    fn bias_grad(&mut self, grad: &CpuBuf, out: &CpuBuf, rows: usize, cols: usize) {
        let grad = grad.0.borrow();
        reduce::bias_grad(&grad[..rows * cols], &mut out.0.borrow_mut()[..cols], rows, cols);
    }

    fn softmax_xent(
        &mut self,
        logits: &CpuBuf,
        labels: &Self::Indices,
        grad: &CpuBuf,
        stats: &CpuBuf,
        rows: usize,
        cols: usize,
        smoothing: f32,
    ) {
        let logits = logits.0.borrow();
        let labels = labels.borrow();
        let mut stats = stats.0.borrow_mut();
        let s = loss::softmax_xent(
            &logits[..rows * cols],
            &labels[..rows],
            &mut grad.0.borrow_mut()[..rows * cols],
            cols,
            smoothing,
        );
        stats[0] += s[0];
        stats[1] += s[1];
        stats[2] += s[2];
    }

    fn sgd_update(&mut self, p: &CpuBuf, g: &CpuBuf, vel: &CpuBuf, len: usize, h: &SgdHyper) {
        let g = g.0.borrow();
        optim::sgd_update(
            &mut p.0.borrow_mut()[..len],
            &g[..len],
            &mut vel.0.borrow_mut()[..len],
            h,
        );
    }

    fn adam_update(
        &mut self,
        p: &CpuBuf,
        g: &CpuBuf,
        m: &CpuBuf,
        v: &CpuBuf,
        len: usize,
        h: &AdamHyper,
    ) {
        let g = g.0.borrow();
        optim::adam_update(
            &mut p.0.borrow_mut()[..len],
            &g[..len],
            &mut m.0.borrow_mut()[..len],
            &mut v.0.borrow_mut()[..len],
            h,
        );
    }

    fn rmsprop_update(
        &mut self,
        p: &CpuBuf,
        g: &CpuBuf,
        sq: &CpuBuf,
        vel: &CpuBuf,
        len: usize,
        h: &RmspropHyper,
    ) {
        let g = g.0.borrow();
        optim::rmsprop_update(
            &mut p.0.borrow_mut()[..len],
            &g[..len],
            &mut sq.0.borrow_mut()[..len],
            &mut vel.0.borrow_mut()[..len],
            h,
        );
    }
}
