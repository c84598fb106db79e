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

use std::cell::{Ref, RefCell, RefMut};
use std::rc::Rc;

use crate::backend::{
    AdamHyper, Arena, Backend, BatchNormHyper, MatmulForm, Nchw, RmspropHyper, SgdHyper, Window,
};
use crate::Result;

/// A CPU tensor: shared so that layers and the workspace can hold the same storage; a view of
/// `len` values from `start` (a whole allocation, or one tensor of an arena, see `alloc_arena`).
#[derive(Clone, Debug, Default)]
pub struct CpuBuf {
    data: Rc<RefCell<Vec<f32>>>,
    start: usize,
    len: usize,
}

impl CpuBuf {
    pub fn to_vec(&self) -> Vec<f32> {
        self.get().to_vec()
    }

    fn get(&self) -> Ref<'_, [f32]> {
        Ref::map(self.data.borrow(), |v| &v[self.start..self.start + self.len])
    }

    fn get_mut(&self) -> RefMut<'_, [f32]> {
        RefMut::map(self.data.borrow_mut(), |v| &mut v[self.start..self.start + self.len])
    }

    /// Two tensors to write at once, which may be views of one arena (a layer's weight and
    /// bias gradients): one borrow of the storage, split between them.
    fn get_two_mut<'a>(a: &'a CpuBuf, b: &'a CpuBuf) -> (RefMut<'a, [f32]>, RefMut<'a, [f32]>) {
        if !Rc::ptr_eq(&a.data, &b.data) {
            return (a.get_mut(), b.get_mut());
        }
        let (ra, rb) = (a.start..a.start + a.len, b.start..b.start + b.len);
        assert!(ra.end <= rb.start || rb.end <= ra.start, "overlapping views written at once");
        RefMut::map_split(a.data.borrow_mut(), move |v| {
            if ra.start < rb.start {
                let (lo, hi) = v.split_at_mut(rb.start);
                (&mut lo[ra], &mut hi[..rb.end - rb.start])
            } else {
                let (lo, hi) = v.split_at_mut(ra.start);
                (&mut hi[..ra.end - ra.start], &mut lo[rb])
            }
        })
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
        Ok(CpuBuf { data: Rc::new(RefCell::new(vec![0.0; len])), start: 0, len })
    }
    fn alloc_arena(&mut self, lens: &[usize]) -> Result<Arena<CpuBuf>> {
        // Tensors on 64-byte lines.
        let (starts, len) = crate::backend::arena_layout(lens, 16);
        let whole = self.alloc(len)?;
        let views = starts
            .iter()
            .zip(lens)
            .map(|(&start, &len)| CpuBuf { data: whole.data.clone(), start, len })
            .collect();
        Ok(Arena { whole, len, views, starts })
    }
    fn alloc_bytes(&mut self, len: usize) -> Result<Self::Bytes> {
        Ok(RefCell::new(vec![0; len]))
    }
    fn alloc_indices(&mut self, len: usize) -> Result<Self::Indices> {
        Ok(RefCell::new(vec![0; len]))
    }

    fn write(&mut self, dst: &CpuBuf, data: &[f32]) {
        dst.get_mut()[..data.len()].copy_from_slice(data);
    }
    fn write_bytes(&mut self, dst: &Self::Bytes, data: &[u8]) {
        dst.borrow_mut()[..data.len()].copy_from_slice(data);
    }
    fn write_indices(&mut self, dst: &Self::Indices, data: &[u32]) {
        dst.borrow_mut()[..data.len()].copy_from_slice(data);
    }
    fn fill_zero(&mut self, dst: &CpuBuf) {
        dst.get_mut().fill(0.0);
    }
    fn copy(&mut self, src: &CpuBuf, dst: &CpuBuf, len: usize) {
        let (src, mut dst) = (src.get(), dst.get_mut());
        dst[..len].copy_from_slice(&src[..len]);
    }
    fn read(&mut self, src: &CpuBuf, len: usize) -> Result<Vec<f32>> {
        Ok(src.get()[..len].to_vec())
    }
    fn submit(&mut self) {}

    fn pixels_to_f32(&mut self, src: &Self::Bytes, dst: &CpuBuf, len: usize) {
        elementwise::pixels_to_f32(&src.borrow()[..len], &mut dst.get_mut()[..len]);
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
        let (a, b) = (a.get(), b.get());
        matmul::matmul(form, &a, &b, &mut c.get_mut(), m, k, n);
    }

    fn add_bias(&mut self, x: &CpuBuf, bias: &CpuBuf, rows: usize, cols: usize, relu: bool) {
        let bias = bias.get();
        let mut x = x.get_mut();
        let x = &mut x[..rows * cols];
        if relu {
            elementwise::add_bias_relu(x, &bias[..cols]);
        } else {
            elementwise::add_bias(x, &bias[..cols]);
        }
    }

    fn normalize(&mut self, x: &CpuBuf, stats: &CpuBuf, shape: Nchw) {
        let stats = stats.get();
        elementwise::normalize(
            &mut x.get_mut()[..shape.len()],
            &stats,
            shape.channels,
            shape.pixels,
        );
    }

    fn relu(&mut self, x: &CpuBuf, len: usize) {
        elementwise::relu(&mut x.get_mut()[..len]);
    }

    fn scale(&mut self, x: &CpuBuf, len: usize, factor: f32) {
        elementwise::scale(&mut x.get_mut()[..len], factor);
    }

    fn add(&mut self, a: &CpuBuf, b: &CpuBuf, out: &CpuBuf, len: usize) {
        let (a, b) = (a.get(), b.get());
        elementwise::add(&a[..len], &b[..len], &mut out.get_mut()[..len]);
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
            &mut input.get_mut(),
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
        let src = src.get();
        elementwise::copy_rows(&src, &mut dst.get_mut(), rows, cols, src_width, dst_width);
    }

    fn im2col(&mut self, x: &CpuBuf, col: &CpuBuf, rows: usize, w: &Window) {
        conv::im2col(&x.get(), &mut col.get_mut(), rows, w);
    }

    fn col2im(&mut self, col: &CpuBuf, x: &CpuBuf, rows: usize, w: &Window) {
        conv::col2im(&col.get(), &mut x.get_mut(), rows, w);
    }

    fn to_channels_first(
        &mut self,
        z: &CpuBuf,
        bias: Option<&CpuBuf>,
        y: &CpuBuf,
        shape: Nchw,
        relu: bool,
    ) {
        let bias = bias.map(|b| b.get());
        conv::to_channels_first(&z.get(), bias.as_deref(), &mut y.get_mut(), shape, relu);
    }

    fn to_channels_last(&mut self, y: &CpuBuf, z: &CpuBuf, shape: Nchw) {
        conv::to_channels_last(&y.get(), &mut z.get_mut(), shape);
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
        let bias = bias.map(|b| b.get());
        conv::conv2d_forward(
            &x.get(),
            &weight.get(),
            bias.as_deref(),
            &mut y.get_mut(),
            &mut col.get_mut(),
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
        // The weight and bias gradients may be views of one arena.
        let (mut grad_weight, mut grad_bias) = match grad_bias {
            Some(gb) => {
                let (w, b) = CpuBuf::get_two_mut(grad_weight, gb);
                (w, Some(b))
            }
            None => (grad_weight.get_mut(), None),
        };
        let mut dx = dx.map(|d| d.get_mut());
        conv::conv2d_backward(
            &x.get(),
            &dy.get(),
            &weight.get(),
            &mut grad_weight,
            grad_bias.as_deref_mut().map(|b| &mut b[..]),
            dx.as_deref_mut().map(|d| &mut d[..]),
            &mut col.get_mut(),
            &mut z.get_mut(),
            rows,
            w,
            outputs,
        );
    }

    fn maxpool(&mut self, x: &CpuBuf, y: &CpuBuf, argmax: &Self::Indices, rows: usize, w: &Window) {
        pool::maxpool(&x.get(), &mut y.get_mut(), &mut argmax.borrow_mut(), rows, w);
    }

    fn maxpool_backward(
        &mut self,
        dy: &CpuBuf,
        argmax: &Self::Indices,
        dx: &CpuBuf,
        rows: usize,
        w: &Window,
    ) {
        pool::maxpool_backward(&dy.get(), &argmax.borrow(), &mut dx.get_mut(), rows, w);
    }

    fn avgpool(&mut self, x: &CpuBuf, y: &CpuBuf, rows: usize, w: &Window) {
        pool::avgpool(&x.get(), &mut y.get_mut(), rows, w);
    }

    fn avgpool_backward(&mut self, dy: &CpuBuf, dx: &CpuBuf, rows: usize, w: &Window) {
        pool::avgpool_backward(&dy.get(), &mut dx.get_mut(), rows, w);
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
            &x.get(),
            &mut saved.get_mut(),
            &mut running_mean.get_mut(),
            &mut running_var.get_mut(),
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
        let (x, saved, gamma, beta) = (x.get(), saved.get(), gamma.get(), beta.get());
        batchnorm::batchnorm_forward(&x, &saved, &gamma, &beta, &mut y.get_mut(), shape);
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
        let (x, dy, saved) = (x.get(), dy.get(), saved.get());
        // The two gradients may be views of one arena.
        let (mut grad_gamma, mut grad_beta) = CpuBuf::get_two_mut(grad_gamma, grad_beta);
        batchnorm::batchnorm_backward_reduce(
            &x,
            &dy,
            &saved,
            &mut grad_gamma,
            &mut grad_beta,
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
        let (x, dy, saved, gamma) = (x.get(), dy.get(), saved.get(), gamma.get());
        let (gg, gb) = (grad_gamma.get(), grad_beta.get());
        batchnorm::batchnorm_backward(&x, &dy, &saved, &gamma, &gg, &gb, &mut dx.get_mut(), shape);
    }

    fn dropout(&mut self, x: &CpuBuf, len: usize, seed: u32, p: f32) {
        elementwise::dropout(&mut x.get_mut()[..len], seed, p);
    }

    fn relu_backward(&mut self, grad: &CpuBuf, activation: &CpuBuf, len: usize) {
        let act = activation.get();
        elementwise::relu_backward(&mut grad.get_mut()[..len], &act[..len]);
    }

    fn bias_grad(&mut self, grad: &CpuBuf, out: &CpuBuf, rows: usize, cols: usize) {
        let grad = grad.get();
        reduce::bias_grad(&grad[..rows * cols], &mut out.get_mut()[..cols], rows, cols);
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
        let logits = logits.get();
        let labels = labels.borrow();
        let mut stats = stats.get_mut();
        let s = loss::softmax_xent(
            &logits[..rows * cols],
            &labels[..rows],
            &mut grad.get_mut()[..rows * cols],
            cols,
            smoothing,
        );
        stats[0] += s[0];
        stats[1] += s[1];
        stats[2] += s[2];
    }

    fn sgd_update(&mut self, p: &CpuBuf, g: &CpuBuf, vel: &CpuBuf, len: usize, h: &SgdHyper) {
        let g = g.get();
        optim::sgd_update(&mut p.get_mut()[..len], &g[..len], &mut vel.get_mut()[..len], h);
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
        let g = g.get();
        optim::adam_update(
            &mut p.get_mut()[..len],
            &g[..len],
            &mut m.get_mut()[..len],
            &mut v.get_mut()[..len],
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
        let g = g.get();
        optim::rmsprop_update(
            &mut p.get_mut()[..len],
            &g[..len],
            &mut sq.get_mut()[..len],
            &mut vel.get_mut()[..len],
            h,
        );
    }
}
