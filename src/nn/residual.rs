//! `res(BODY)` and `res(BODY;SHORTCUT)`: a residual block, `y = body(x) + shortcut(x)`, the
//! shortcut the identity or its own layers (a 1×1 conv and batch norm where the body changes
//! the shape). In PyTorch (README has the module's code):
//! `Residual(body=nn.Sequential(...), shortcut=nn.Sequential(...) or nn.Identity())`, so its
//! tensors are named `N.body.J.weight` and `N.shortcut.J.weight`.

use crate::backend::Backend;
use crate::nn::layer::{
    backward_chain, build_chain, forward_chain, layer_error, BuildContext, Chain,
};
use crate::nn::workspace::Buffers;
use crate::nn::{LayerSpec, Mode, Shape};
use crate::Result;

pub struct Residual<B: Backend> {
    pub body: Chain<B>,
    /// `None`: the identity.
    pub shortcut: Option<Chain<B>>,
    pub input: Shape,
    pub output: Shape,
}

/// A block's buffers besides its output and gradient (which its chain owns).
pub struct ResidualBuffers<B: Backend> {
    pub body: Buffers<B>,
    pub shortcut: Option<Buffers<B>>,
    /// The input gradient through each path, added into the block's input gradient.
    pub body_dx: B::Buf,
    pub shortcut_dx: Option<B::Buf>,
    /// A chain whose last layers work in place would overwrite the block's output gradient,
    /// which the other path still needs: it gets a copy instead of sharing it.
    pub body_copies_grad: bool,
    pub shortcut_copies_grad: bool,
}

/// Ids of a block's layers: apart from every model position and from each other.
fn chain_id(block: u64, branch: u64) -> u64 {
    (block + 1) << 16 | branch << 15
}

impl<B: Backend> Residual<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        b: &mut B,
        body: &[LayerSpec],
        shortcut: Option<&[LayerSpec]>,
        input: Shape,
        cx: &mut BuildContext<'_>,
        path: &str,
        id: u64,
        spec: &LayerSpec,
    ) -> Result<Self> {
        let mut chain = |specs: &[LayerSpec], name: &str, branch: u64| -> Result<Chain<B>> {
            // A chain that began in place would overwrite the block's input, which the other
            // path reads too.
            if specs.first().is_some_and(LayerSpec::in_place) {
                return Err(layer_error(
                    path,
                    spec,
                    format!(
                        "its {name} starts with {}, which would overwrite the block's input; \
                         start it with a conv, linear, pool or bn",
                        specs[0]
                    ),
                ));
            }
            let mut sub = BuildContext {
                rng: &mut *cx.rng,
                num_classes: cx.num_classes,
                path: format!("{path}.{name}."),
                id_base: chain_id(id, branch),
                is_model: false,
            };
            build_chain(b, specs, input, &mut sub)
        };
        let body = chain(body, "body", 0)?;
        let shortcut = match shortcut {
            Some(specs) => Some(chain(specs, "shortcut", 1)?),
            None => None,
        };
        let output = body.output();
        let other = shortcut.as_ref().map_or(input, Chain::output);
        if output != other {
            let hint = if shortcut.is_none() {
                format!(
                    "; give it a shortcut that matches, e.g. res(...;conv:{}:1{}:nobias,bn)",
                    output.channels,
                    if output.height < input.height {
                        format!(":s={}", input.height / output.height.max(1))
                    } else {
                        String::new()
                    }
                )
            } else {
                String::new()
            };
            return Err(layer_error(
                path,
                spec,
                format!(
                    "its body gives {output} but its {} gives {other}; the two are added{hint}",
                    if shortcut.is_some() { "shortcut" } else { "identity shortcut" }
                ),
            ));
        }
        Ok(Residual { body, shortcut, input, output })
    }

    pub fn num_params(&self) -> usize {
        self.body.num_params() + self.shortcut.as_ref().map_or(0, Chain::num_params)
    }

    /// `y = body(x) + shortcut(x)`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        b: &mut B,
        s: &ResidualBuffers<B>,
        x: &B::Buf,
        y: &B::Buf,
        rows: usize,
        mode: Mode,
        seed: u64,
    ) {
        forward_chain(b, &self.body, &s.body, x, rows, mode, seed);
        let body_out = s.body.activations.last().expect("a block's body has layers");
        let other = match (&self.shortcut, &s.shortcut) {
            (Some(chain), Some(bufs)) => {
                forward_chain(b, chain, bufs, x, rows, mode, seed);
                bufs.activations.last().expect("a shortcut has layers")
            }
            _ => x,
        };
        b.add(body_out, other, y, rows * self.output.len());
    }

    /// The output gradient `g` goes through both paths; their input gradients add into `dx`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        b: &mut B,
        s: &ResidualBuffers<B>,
        x: &B::Buf,
        g: &B::Buf,
        dx: Option<&B::Buf>,
        rows: usize,
        mode: Mode,
        seed: u64,
    ) {
        let width = self.output.len();
        let copy = |b: &mut B, bufs: &Buffers<B>| {
            let last = bufs.grads.last().expect("a chain has layers");
            b.copy_rows(g, last, rows, width, width, width);
        };
        if s.body_copies_grad {
            copy(b, &s.body);
        }
        backward_chain(b, &self.body, &s.body, x, dx.map(|_| &s.body_dx), 0, rows, mode, seed);
        let other = match (&self.shortcut, &s.shortcut) {
            (Some(chain), Some(bufs)) => {
                if s.shortcut_copies_grad {
                    copy(b, bufs);
                }
                let sdx = s.shortcut_dx.as_ref();
                backward_chain(b, chain, bufs, x, dx.and(sdx), 0, rows, mode, seed);
                sdx
            }
            _ => Some(g),
        };
        if let (Some(dx), Some(other)) = (dx, other) {
            b.add(&s.body_dx, other, dx, rows * self.input.len());
        }
    }
}
