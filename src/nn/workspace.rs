//! The buffers one training step needs, created once per run: each layer's output and its
//! gradient (in-place layers share the buffers of the layer before), and each layer's own
//! scratch (typed by kind), blocks included.

use crate::backend::{Backend, Nchw};
use crate::nn::conv::ConvScratch;
use crate::nn::layer::{Chain, Layer};
use crate::nn::residual::ResidualBuffers;
use crate::nn::Model;
use crate::{Error, Result};
use std::ops::Range;

/// Extra buffers a layer needs besides its output and gradient.
pub struct Scratch<B: Backend> {
    /// Conv: the im2col matrix `[rows·pixels, C·K·K]` and the matmul's rows `[rows·pixels, O]`
    /// (each reused for its gradient); on the CPU, one chunk's worth per thread
    /// (`Backend::conv_scratch_len`).
    pub conv: Option<ConvScratch<B>>,
    /// MaxPool: where each output came from.
    pub argmax: Option<B::Indices>,
    /// BatchNorm: the statistics forward used, `[mean; C]` then `[1/√(var+eps); C]`.
    pub saved: Option<B::Buf>,
    /// Residual block: its chains' buffers.
    pub residual: Option<Box<ResidualBuffers<B>>>,
}

/// A chain's buffers, one entry per layer.
pub struct Buffers<B: Backend> {
    /// Each layer's output (ReLU, Flatten and Dropout share the buffer of the layer before).
    pub activations: Vec<B::Buf>,
    /// The loss gradient with respect to each layer's output (shared likewise).
    pub grads: Vec<B::Buf>,
    pub scratch: Vec<Scratch<B>>,
}

impl<B: Backend> Buffers<B> {
    /// For `chain` over `capacity` samples; `input` is what a first in-place layer would share,
    /// `out_grad` the buffer the last layer's gradient arrives in, if the caller has it (a
    /// block's output gradient). `path` names the chain's layers in errors.
    pub fn new(
        b: &mut B,
        chain: &Chain<B>,
        capacity: usize,
        input: &B::Buf,
        out_grad: Option<&B::Buf>,
        path: &str,
    ) -> Result<Self> {
        let mut activations: Vec<B::Buf> = Vec::new();
        let mut grads: Vec<B::Buf> = Vec::new();
        let mut scratch = Vec::new();
        let last = chain.layers.len().saturating_sub(1);
        for (i, layer) in chain.layers.iter().enumerate() {
            let len = capacity * chain.shapes[i].len();
            let shares = layer.in_place();
            if shares && i > 0 {
                activations.push(activations[i - 1].clone());
                grads.push(grads[i - 1].clone());
            } else if shares {
                activations.push(input.clone());
                grads.push(b.alloc(len)?);
            } else {
                activations.push(b.alloc(len)?);
                grads.push(match out_grad {
                    Some(g) if i == last => g.clone(),
                    _ => b.alloc(len)?,
                });
            }
            // Matmul rows: the batch for a Linear, one per output pixel for a Conv.
            let matmul_rows = match layer {
                Layer::Linear { .. } => capacity,
                Layer::Conv { window, .. } => capacity * window.out_pixels(),
                _ => 0,
            };
            if matmul_rows > b.max_matmul_dim() {
                return Err(Error::Gpu(format!(
                    "layer {path}{i} needs a matmul over {matmul_rows} rows, but this device runs at most {} \
                     (max_compute_workgroups_per_dimension); use a smaller --batch-size",
                    b.max_matmul_dim()
                )));
            }
            let mut s = Scratch { conv: None, argmax: None, saved: None, residual: None };
            match layer {
                Layer::Conv { window, outputs, .. } => {
                    s.conv = Some(ConvScratch::new(b, capacity, window, *outputs)?)
                }
                Layer::MaxPool { .. } => s.argmax = Some(b.alloc_indices(len)?),
                Layer::BatchNorm(bn) => s.saved = Some(b.alloc(2 * bn.channels)?),
                Layer::Residual(r) => {
                    let g = grads[i].clone();
                    let sub = |b: &mut B, c: &Chain<B>, name: &str| -> Result<(Buffers<B>, bool)> {
                        let copies = c.layers.last().is_some_and(Layer::in_place);
                        let shared = (!copies).then_some(&g);
                        let bufs = Buffers::new(
                            b,
                            c,
                            capacity,
                            input,
                            shared,
                            &format!("{path}{i}.{name}."),
                        )?;
                        Ok((bufs, copies))
                    };
                    let (body, body_copies_grad) = sub(b, &r.body, "body")?;
                    let (shortcut, shortcut_copies_grad) = match &r.shortcut {
                        Some(c) => {
                            let (bufs, copies) = sub(b, c, "shortcut")?;
                            (Some(bufs), copies)
                        }
                        None => (None, false),
                    };
                    let in_len = capacity * r.input.len();
                    s.residual = Some(Box::new(ResidualBuffers {
                        body,
                        shortcut_dx: if shortcut.is_some() { Some(b.alloc(in_len)?) } else { None },
                        shortcut,
                        body_dx: b.alloc(in_len)?,
                        body_copies_grad,
                        shortcut_copies_grad,
                    }));
                }
                _ => {}
            }
            scratch.push(s);
        }
        Ok(Buffers { activations, grads, scratch })
    }
}

/// f32 values one sample takes in a chain's buffers (outputs, gradients, a block's extra
/// input gradients), for the memory check before allocating.
fn floats_per_sample<B: Backend>(chain: &Chain<B>) -> Option<u64> {
    let mut total = 0u64;
    for (layer, shape) in chain.layers.iter().zip(&chain.shapes) {
        total = total.checked_add(2 * shape.len() as u64)?;
        if let Layer::Residual(r) = layer {
            total = total.checked_add(floats_per_sample(&r.body)?)?;
            if let Some(s) = &r.shortcut {
                total =
                    total.checked_add(floats_per_sample(s)?)?.checked_add(r.input.len() as u64)?;
            }
            total = total.checked_add(r.input.len() as u64)?;
        }
    }
    Some(total)
}

/// Calls `f` on `bufs` and on every residual block's chains inside, depth first.
fn each_chain<'a, B: Backend>(bufs: &'a Buffers<B>, f: &mut dyn FnMut(&'a Buffers<B>)) {
    f(bufs);
    for r in bufs.scratch.iter().filter_map(|s| s.residual.as_ref()) {
        each_chain(&r.body, f);
        if let Some(sc) = &r.shortcut {
            each_chain(sc, f);
        }
    }
}

/// An in-memory split held on the device, uploaded once (see `Backend::holds_data`), and room
/// for one batch's codes. A split larger than one device buffer is held in parts of whole
/// samples, each gathered from by its own `gather_batch` call.
pub struct DeviceData<B: Backend> {
    /// The pixels, u8, in parts, each with the samples it holds.
    pub parts: Vec<(B::Bytes, Range<usize>)>,
    pub labels: B::Indices,
    pub batch: B::Indices,
    /// (channels, height, width)
    pub shape: [usize; 3],
}

impl<B: Backend> DeviceData<B> {
    /// Uploads `split` in parts as large as the device's buffers allow; an error when the device
    /// is out of memory for it (a software adapter's: the machine's, see `create_buffer`), or
    /// when it is streamed from files (those are uploaded batch by batch).
    pub fn new(
        b: &mut B,
        split: &crate::data::Split,
        shape: [usize; 3],
        capacity: usize,
    ) -> Result<Self> {
        let part_bytes = b.max_bytes_per_buffer();
        Self::in_parts(b, split, shape, capacity, part_bytes)
    }

    /// [`DeviceData::new`] with parts of at most `part_bytes` bytes (tests use small parts).
    pub fn in_parts(
        b: &mut B,
        split: &crate::data::Split,
        shape: [usize; 3],
        capacity: usize,
        part_bytes: usize,
    ) -> Result<Self> {
        let sample: usize = shape.iter().product();
        let Some(pixels) = split.images() else {
            return Err(Error::Other(
                "a split streamed from image files is not held on the device".into(),
            ));
        };
        let per_part = part_bytes / sample.max(1);
        if per_part == 0 {
            return Err(Error::Other(format!(
                "one sample ({sample} bytes) is larger than the device's buffers ({part_bytes})"
            )));
        }
        let mut parts = Vec::with_capacity(split.len.div_ceil(per_part));
        for first in (0..split.len).step_by(per_part) {
            let held = first..(first + per_part).min(split.len);
            let bytes = b.alloc_bytes(held.len() * sample)?;
            b.write_bytes(&bytes, &pixels[held.start * sample..held.end * sample]);
            parts.push((bytes, held));
        }
        let labels = b.alloc_indices(split.len)?;
        let l: Vec<u32> = split.labels[..split.len].iter().map(|&v| v as u32).collect();
        b.write_indices(&labels, &l);
        let batch = b.alloc_indices(2 * capacity)?;
        Ok(DeviceData { parts, labels, batch, shape })
    }

    /// Uploads `codes` (each sample's index and augmentation code) and gathers those samples
    /// into `input` (f32) and `labels_out`.
    pub fn gather(&self, b: &mut B, codes: &[u32], input: &B::Buf, labels_out: &B::Indices) {
        b.write_indices(&self.batch, codes);
        for (images, held) in &self.parts {
            let rows = codes.len() / 2;
            b.gather_batch(
                images,
                held.clone(),
                &self.labels,
                &self.batch,
                input,
                labels_out,
                rows,
                self.shape,
            );
        }
    }
}

/// Buffers one step needs, sized for `capacity` samples and created once per run.
pub struct Workspace<B: Backend> {
    pub capacity: usize,
    pub pixels: B::Bytes,
    pub labels: B::Indices,
    pub input: B::Buf,
    /// The model's layers' buffers; the last activation holds the logits.
    pub bufs: Buffers<B>,
    /// The model's input normalisation: `[mean; C][1/std; C]`, channels, pixels.
    normalization: Option<(B::Buf, usize, usize)>,
}

impl<B: Backend> Workspace<B> {
    pub fn new(b: &mut B, model: &Model<B>, capacity: usize) -> Result<Self> {
        // Activations and their gradients for `capacity` samples, f32, counted first.
        let per_sample =
            floats_per_sample(&model.chain).and_then(|f| f.checked_add(model.input_size as u64));
        let need = per_sample.and_then(|p| p.checked_mul(4 * capacity as u64));
        let what = format!("a batch of {capacity} through this model (activations and gradients)");
        if let Some(why) = crate::device::memory_shortfall(need, &what) {
            return Err(Error::config("--batch-size", why));
        }
        let input = b.alloc(capacity * model.input_size)?;
        let bufs = Buffers::new(b, &model.chain, capacity, &input, None, "")?;
        let normalization = model.normalization.as_ref().map(|(_, _, buf)| {
            (buf.clone(), model.input.channels, model.input.height * model.input.width)
        });
        Ok(Workspace {
            capacity,
            pixels: b.alloc_bytes(capacity * model.input_size)?,
            labels: b.alloc_indices(capacity)?,
            input,
            bufs,
            normalization,
        })
    }

    /// The logits of the last forward pass.
    pub fn logits(&self) -> &B::Buf {
        self.bufs.activations.last().expect("a model has layers")
    }

    /// Every layer's output buffer, blocks' layers included (for tests that look inside).
    pub fn all_activations(&self) -> Vec<&B::Buf> {
        let mut out = Vec::new();
        each_chain(&self.bufs, &mut |bufs| out.extend(&bufs.activations));
        out
    }

    /// Every max pool's argmax buffer, blocks' included.
    pub fn all_argmax(&self) -> Vec<&B::Indices> {
        let mut out = Vec::new();
        each_chain(&self.bufs, &mut |bufs| {
            out.extend(bufs.scratch.iter().filter_map(|s| s.argmax.as_ref()))
        });
        out
    }

    /// Assembles a batch on the device from a data set it holds: uploads only `codes` (each
    /// sample's index and augmentation, from `Batcher::next_codes`), then gathers, converts and
    /// normalises there.
    pub fn load_codes(&self, b: &mut B, data: &DeviceData<B>, codes: &[u32]) {
        let rows = codes.len() / 2;
        debug_assert!(rows <= self.capacity);
        data.gather(b, codes, &self.input, &self.labels);
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
            b.normalize(&self.input, stats, Nchw::new(rows, *channels, *plane));
        }
    }
}
