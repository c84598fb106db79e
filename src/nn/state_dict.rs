//! PyTorch `state_dict` names and order for a model's tensors, and moving them to and from the
//! host: `N.weight`, `N.bias`, batch norm's `N.running_mean`, `N.running_var`,
//! `N.num_batches_tracked`, and inside a residual block `N.body.J.…` / `N.shortcut.J.…`.

use crate::backend::Backend;
use crate::nn::batchnorm::BatchNorm;
use crate::nn::layer::{Chain, Layer};
use crate::nn::{HostTensors, Model, Param};
use crate::{Error, Result};

/// Calls `f(prefix, layer)` for every layer, blocks' layers included (after their block), with
/// the layer's name prefix (`"3."`, `"3.body.0."`).
pub fn visit<'a, B: Backend>(
    chain: &'a Chain<B>,
    prefix: &str,
    f: &mut dyn FnMut(&str, &'a Layer<B>),
) {
    for (position, layer) in chain.layers.iter().enumerate() {
        let name = format!("{prefix}{position}.");
        f(&name, layer);
        if let Layer::Residual(r) = layer {
            visit(&r.body, &format!("{name}body."), f);
            if let Some(s) = &r.shortcut {
                visit(s, &format!("{name}shortcut."), f);
            }
        }
    }
}

/// A tensor's name from its position-based one (`resnet18`: torchvision's).
pub type Rename = fn(&str) -> String;

/// Names as positions give them.
pub fn positional(name: &str) -> String {
    name.to_string()
}

/// Every parameter with its gradient, in `state_dict` order.
pub fn params<B: Backend>(chain: &Chain<B>, rename: Rename) -> Vec<Param<'_, B>> {
    let mut out = Vec::new();
    visit(chain, "", &mut |prefix, layer| {
        if let Some(w) = layer.weights() {
            out.push(Param {
                name: rename(&format!("{prefix}weight")),
                shape: w.weight_shape.clone(),
                value: &w.weight,
                grad: &w.grad_weight,
            });
            if let (Some(bias), Some(grad)) = (&w.bias, &w.grad_bias) {
                out.push(Param {
                    name: rename(&format!("{prefix}bias")),
                    shape: vec![w.weight_shape[0]],
                    value: bias,
                    grad,
                });
            }
        }
    });
    out
}

/// Every batch norm with its (position-based) name prefix.
fn batch_norms<B: Backend>(chain: &Chain<B>) -> Vec<(String, &BatchNorm<B>)> {
    let mut out = Vec::new();
    visit(chain, "", &mut |prefix, layer| {
        if let Layer::BatchNorm(bn) = layer {
            out.push((prefix.to_string(), bn));
        }
    });
    out
}

/// The batch-norm running statistics, which checkpoints keep beside the parameters:
/// `(name, shape, buffer)`; `num_batches_tracked` is a host-side count (see `export`).
fn buffers<B: Backend>(chain: &Chain<B>, rename: Rename) -> Vec<(String, Vec<usize>, &B::Buf)> {
    let mut out = Vec::new();
    for (prefix, bn) in batch_norms(chain) {
        out.push((rename(&format!("{prefix}running_mean")), vec![bn.channels], &bn.running_mean));
        out.push((rename(&format!("{prefix}running_var")), vec![bn.channels], &bn.running_var));
    }
    out
}

/// Every tensor name the model's `state_dict` has.
fn names<B: Backend>(chain: &Chain<B>, rename: Rename) -> Vec<String> {
    let mut names: Vec<String> = params(chain, rename).iter().map(|p| p.name.clone()).collect();
    names.extend(buffers(chain, rename).into_iter().map(|(n, _, _)| n));
    names.extend(
        batch_norms(chain).into_iter().map(|(p, _)| rename(&format!("{p}num_batches_tracked"))),
    );
    names
}

/// PyTorch's `state_dict` order: module by module in registration order (numbers compared as
/// numbers), and within one: weight, bias, running_mean, running_var, num_batches_tracked.
pub fn sort_state_dict(t: &mut HostTensors) {
    fn key(name: &str) -> (Vec<(u8, usize, String)>, usize) {
        let (module, field) = name.rsplit_once('.').unwrap_or(("", name));
        let parts = module
            .split('.')
            .map(|p| match p.parse::<usize>() {
                Ok(n) => (0, n, String::new()),
                // body before shortcut, as the block registers them.
                Err(_) => (
                    1,
                    ["body", "shortcut"].iter().position(|&f| f == p).unwrap_or(9),
                    p.to_string(),
                ),
            })
            .collect();
        let rank = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
            .iter()
            .position(|f| *f == field)
            .unwrap_or(9);
        (parts, rank)
    }
    t.sort_by_cached_key(|(name, _, _)| key(name));
}

impl<B: Backend> Model<B> {
    /// How this model names its tensors.
    pub fn rename(&self) -> Rename {
        match self.spec.named {
            Some("resnet18") => crate::nn::torchvision_name,
            _ => positional,
        }
    }

    /// Reads the whole `state_dict` back to the host in PyTorch's order.
    pub fn export(&self, backend: &mut B) -> Result<HostTensors> {
        let mut out = Vec::new();
        for p in self.params() {
            let values = backend.read(p.value, p.len())?;
            out.push((p.name.clone(), p.shape.clone(), values));
        }
        let rename = self.rename();
        for (name, shape, buf) in buffers(&self.chain, rename) {
            let values = backend.read(buf, shape[0])?;
            out.push((name, shape, values));
        }
        for (prefix, bn) in batch_norms(&self.chain) {
            let name = rename(&format!("{prefix}num_batches_tracked"));
            out.push((name, vec![], vec![bn.tracked.get() as f32]));
        }
        // Position-based names sort into PyTorch's order; others keep the model's.
        if self.spec.named.is_none() {
            sort_state_dict(&mut out);
        }
        Ok(out)
    }

    /// The names of the last layer's tensors (the classifier head a fine-tune replaces).
    pub fn head_names(&self) -> Vec<String> {
        let last = self.chain.layers.len().saturating_sub(1).to_string();
        params(&self.chain, positional)
            .into_iter()
            .filter(|p| p.name.split('.').next() == Some(last.as_str()))
            .map(|p| (self.rename())(&p.name))
            .collect()
    }

    /// [`Model::import`] of every tensor but the classifier head, which keeps its fresh init:
    /// fine-tuning on a data set with other classes. The file's head tensors are left unused.
    pub fn import_without_head(
        &self,
        backend: &mut B,
        tensors: &HostTensors,
        source: &str,
    ) -> Result<()> {
        self.import_except(backend, tensors, source, &self.head_names())
    }

    /// Loads parameters by name; every tensor must be present with the model's shape, and no
    /// other tensor may be (as PyTorch's strict `load_state_dict`). `source` names the file.
    pub fn import(&self, backend: &mut B, tensors: &HostTensors, source: &str) -> Result<()> {
        self.import_except(backend, tensors, source, &[])
    }

    /// [`Model::import`], leaving the tensors named in `skip` as they are (and the file's
    /// tensors of those names unused).
    fn import_except(
        &self,
        backend: &mut B,
        tensors: &HostTensors,
        source: &str,
        skip: &[String],
    ) -> Result<()> {
        let expected = names(&self.chain, self.rename());
        let missing = |name: &str, shape: &[usize]| {
            Error::file(
                source,
                format!(
                    "tensor {name:?} (shape {shape:?}) is missing; model {} expects {}",
                    self.spec,
                    expected.join(", ")
                ),
            )
        };
        let entries = self
            .params()
            .into_iter()
            .map(|p| (p.name, p.shape, p.value))
            .chain(buffers(&self.chain, self.rename()));
        for (name, want, value) in entries.filter(|(n, _, _)| !skip.contains(n)) {
            let Some((_, shape, values)) = tensors.iter().find(|(n, _, _)| *n == name) else {
                return Err(missing(&name, &want));
            };
            if *shape != want {
                return Err(Error::file(
                    source,
                    format!(
                        "tensor {name:?} has shape {shape:?}, but model {} with {} inputs and {} classes needs {want:?}",
                        self.spec, self.input, self.num_classes
                    ),
                ));
            }
            backend.write(value, values);
        }
        for (prefix, bn) in batch_norms(&self.chain) {
            let name = (self.rename())(&format!("{prefix}num_batches_tracked"));
            let count = tensors
                .iter()
                .find(|(n, _, _)| *n == name)
                .and_then(|(_, _, v)| v.first().copied());
            let Some(count) = count else { return Err(missing(&name, &[])) };
            bn.tracked.set(count.max(0.0) as u64);
        }
        if let Some((extra, _, _)) =
            tensors.iter().find(|(n, _, _)| !expected.contains(n) && !skip.contains(n))
        {
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
}
