//! Optimizers, written once over [`Backend`]: host-side hyperparameters and step counting; the
//! element-wise update runs on the device (`sgd_update`, `adam_update`, `rmsprop_update`), with
//! its state kept there: one launch over the model's whole parameter arena per step (see
//! [`Optimizer`]), or one per tensor when some are frozen, the model has no arena, or Adam and
//! RMSprop run with eps = 0.

use std::fmt;
use std::str::FromStr;

use crate::backend::{AdamHyper, Backend, RmspropHyper, SgdHyper};
use crate::nn::{HostTensors, Model};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    /// `torch.optim.SGD` (momentum only if `--momentum` is given).
    Sgd,
    /// `torch.optim.SGD(momentum=0.9)` unless `--momentum` says otherwise.
    Momentum,
    /// `torch.optim.SGD(momentum=0.9, nesterov=True)`.
    Nesterov,
    Adam,
    AdamW,
    Rmsprop,
}

impl OptimizerKind {
    pub const NAMES: &'static str = "sgd, momentum, nesterov, adam, adamw, rmsprop";
    pub const ALL: [OptimizerKind; 6] = [
        OptimizerKind::Sgd,
        OptimizerKind::Momentum,
        OptimizerKind::Nesterov,
        OptimizerKind::Adam,
        OptimizerKind::AdamW,
        OptimizerKind::Rmsprop,
    ];
}

impl FromStr for OptimizerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "sgd" => OptimizerKind::Sgd,
            "momentum" => OptimizerKind::Momentum,
            "nesterov" => OptimizerKind::Nesterov,
            "adam" => OptimizerKind::Adam,
            "adamw" => OptimizerKind::AdamW,
            "rmsprop" => OptimizerKind::Rmsprop,
            _ => {
                return Err(Error::config(
                    "--optimizer",
                    format!("unknown optimizer {s:?}; expected one of {}", Self::NAMES),
                ))
            }
        })
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Momentum => "momentum",
            OptimizerKind::Nesterov => "nesterov",
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::Rmsprop => "rmsprop",
        };
        f.write_str(s)
    }
}

/// An optimizer's hyperparameters. [`OptimizerConfig::new`] fills in PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub alpha: f32,
}

impl OptimizerConfig {
    /// PyTorch's defaults for the kind: SGD lr 1e-3; Adam/AdamW lr 1e-3, betas (0.9, 0.999),
    /// eps 1e-8, AdamW weight decay 1e-2; RMSprop lr 1e-2, alpha 0.99, eps 1e-8. `momentum` and
    /// `nesterov` are SGD with momentum 0.9.
    pub fn new(kind: OptimizerKind) -> Self {
        let (lr, momentum, weight_decay) = match kind {
            OptimizerKind::Sgd => (1e-3, 0.0, 0.0),
            OptimizerKind::Momentum | OptimizerKind::Nesterov => (1e-3, 0.9, 0.0),
            OptimizerKind::Adam => (1e-3, 0.0, 0.0),
            OptimizerKind::AdamW => (1e-3, 0.0, 1e-2),
            OptimizerKind::Rmsprop => (1e-2, 0.0, 0.0),
        };
        OptimizerConfig {
            kind,
            lr,
            momentum,
            weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            alpha: 0.99,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let check = |flag: &str, v: f32, ok: bool, want: &str| {
            if ok && v.is_finite() {
                Ok(())
            } else {
                Err(Error::config(flag, format!("{v} is out of range; expected {want}")))
            }
        };
        check("--lr", self.lr, self.lr >= 0.0, "a number >= 0")?;
        check("--momentum", self.momentum, (0.0..1.0).contains(&self.momentum), "0 <= m < 1")?;
        check("--weight-decay", self.weight_decay, self.weight_decay >= 0.0, "a number >= 0")?;
        check("--beta1", self.beta1, (0.0..1.0).contains(&self.beta1), "0 <= beta1 < 1")?;
        check("--beta2", self.beta2, (0.0..1.0).contains(&self.beta2), "0 <= beta2 < 1")?;
        check("--eps", self.eps, self.eps >= 0.0, "a number >= 0")?;
        check("--alpha", self.alpha, (0.0..1.0).contains(&self.alpha), "0 <= alpha < 1")?;
        if self.kind == OptimizerKind::Nesterov && self.momentum == 0.0 {
            return Err(Error::config("--momentum", "nesterov needs a momentum above 0"));
        }
        Ok(())
    }
}

/// An optimizer bound to one model's parameters: two state tensors per parameter. For a model
/// whose parameters are in an arena ([`crate::nn::ParamArena`]) the state is in two arenas laid
/// out alike, and a step is one update over the whole arenas (one dispatch on a GPU, whatever
/// the number of tensors); with frozen parameters, or without an arena, one per tensor.
pub struct Optimizer<B: Backend> {
    pub config: OptimizerConfig,
    /// Steps taken so far (PyTorch's `step` in the optimizer state).
    pub steps: u64,
    /// Per parameter: its two state tensors (views of `arenas` when there are arenas).
    state: Vec<(B::Buf, B::Buf)>,
    /// The whole state arenas, when the model's parameters are in one.
    arenas: Option<(B::Buf, B::Buf)>,
    /// Per parameter: left as it is (`--freeze`).
    frozen: Vec<bool>,
    /// The first top-level layer with a parameter that trains: backward stops there.
    first_trained: usize,
    /// Updates tensor by tensor even when there are arenas (what tests hold the one update to).
    pub per_tensor: bool,
}

impl<B: Backend> Optimizer<B> {
    pub fn new(backend: &mut B, config: OptimizerConfig, model: &Model<B>) -> Result<Self> {
        config.validate()?;
        let needs_two = matches!(
            config.kind,
            OptimizerKind::Adam | OptimizerKind::AdamW | OptimizerKind::Rmsprop
        );
        let mut state = Vec::new();
        let mut arenas = None;
        if let Some(arena) = &model.arena {
            // Laid out as the parameters (same lengths, same device, so the same layout).
            let first = backend.alloc_arena(&arena.lens)?;
            let second = if needs_two { Some(backend.alloc_arena(&arena.lens)?) } else { None };
            let unused = backend.alloc(1)?;
            let seconds = match &second {
                Some(s) => s.views.clone(),
                None => vec![unused.clone(); arena.lens.len()],
            };
            state.extend(first.views.into_iter().zip(seconds));
            arenas = Some((first.whole, second.map_or(unused, |s| s.whole)));
        } else {
            let mut failed = None;
            model.for_each_param(|_, _, _, len| {
                let second = if needs_two { len } else { 1 };
                match (backend.alloc(len), backend.alloc(second)) {
                    (Ok(first), Ok(second)) => state.push((first, second)),
                    (Err(e), _) | (_, Err(e)) => failed = failed.take().or(Some(e)),
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
        }
        let frozen = vec![false; state.len()];
        let first_trained = model.param_layers().first().copied().unwrap_or(0);
        Ok(Optimizer { config, steps: 0, state, arenas, frozen, first_trained, per_tensor: false })
    }

    /// Leaves every parameter under one of `prefixes` as it is (`--freeze 0.,3.body`); an error
    /// names a prefix that matches nothing. A prefix covers whole dot-separated parts of a name:
    /// `1` and `1.` freeze `1.weight`, never `10.weight`. Returns how many parameters are frozen.
    pub fn freeze(&mut self, model: &Model<B>, prefixes: &[String]) -> Result<usize> {
        let names: Vec<String> = model.params().into_iter().map(|p| p.name).collect();
        let under = |name: &str, prefix: &str| {
            name.strip_prefix(prefix).is_some_and(|rest| {
                rest.is_empty() || prefix.ends_with('.') || rest.starts_with('.')
            })
        };
        for prefix in prefixes {
            if !names.iter().any(|n| under(n, prefix)) {
                return Err(Error::config(
                    "--freeze",
                    format!("{prefix:?} matches no parameter; they are {}", names.join(", ")),
                ));
            }
        }
        for (flag, name) in self.frozen.iter_mut().zip(&names) {
            *flag = prefixes.iter().any(|p| under(name, p));
        }
        let layers = model.param_layers();
        let trained = layers.iter().zip(&self.frozen).filter(|(_, frozen)| !**frozen);
        self.first_trained =
            trained.map(|(layer, _)| *layer).min().unwrap_or(model.chain.layers.len());
        Ok(self.frozen.iter().filter(|f| **f).count())
    }

    /// The first top-level layer of the model with a parameter this optimizer updates. No
    /// gradient is needed before it, so the backward pass stops there (`Model::backward_from`):
    /// fine-tuning a new head on a frozen backbone runs the head's backward pass alone.
    pub fn first_trained_layer(&self) -> usize {
        self.first_trained
    }

    /// The whole state arenas (laid out as the model's [`crate::nn::ParamArena`]), when there
    /// are arenas; the second is a 1-value placeholder for optimizers with one state tensor.
    pub fn state_arenas(&self) -> Option<&(B::Buf, B::Buf)> {
        self.arenas.as_ref()
    }

    /// The names of a parameter's state tensors, as `torch.optim` calls them (none for plain
    /// SGD, which keeps no state).
    fn slot_names(&self) -> [Option<&'static str>; 2] {
        match self.config.kind {
            OptimizerKind::Sgd if self.config.momentum == 0.0 => [None, None],
            OptimizerKind::Sgd | OptimizerKind::Momentum | OptimizerKind::Nesterov => {
                [Some("momentum_buffer"), None]
            }
            OptimizerKind::Adam | OptimizerKind::AdamW => [Some("exp_avg"), Some("exp_avg_sq")],
            OptimizerKind::Rmsprop if self.config.momentum == 0.0 => [Some("square_avg"), None],
            OptimizerKind::Rmsprop => [Some("square_avg"), Some("momentum_buffer")],
        }
    }

    /// The state a resumed run needs, read back to the host: per parameter its state tensors
    /// as `optimizer.PARAM.SLOT` (`optimizer.0.weight.exp_avg`, ...) with the parameter's shape.
    /// The step count travels separately (`steps`).
    pub fn export(&self, backend: &mut B, model: &Model<B>) -> Result<HostTensors> {
        let mut out = Vec::new();
        let slots = self.slot_names();
        for (param, state) in model.params().iter().zip(&self.state) {
            for (slot, buf) in slots.iter().zip([&state.0, &state.1]) {
                if let Some(slot) = slot {
                    let values = backend.read(buf, param.len())?;
                    out.push((
                        format!("optimizer.{}.{slot}", param.name),
                        param.shape.clone(),
                        values,
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Loads what [`Optimizer::export`] wrote (every state tensor must be there, with its
    /// parameter's shape) and the step count; `source` names the file.
    pub fn import(
        &mut self,
        backend: &mut B,
        model: &Model<B>,
        tensors: &HostTensors,
        steps: u64,
        source: &std::path::Path,
    ) -> Result<()> {
        let slots = self.slot_names();
        for (param, state) in model.params().iter().zip(&self.state) {
            for (slot, buf) in slots.iter().zip([&state.0, &state.1]) {
                let Some(slot) = slot else { continue };
                let name = format!("optimizer.{}.{slot}", param.name);
                match tensors.iter().find(|(n, _, _)| *n == name) {
                    Some((_, shape, values)) if *shape == param.shape => backend.write(buf, values),
                    Some((_, shape, _)) => {
                        return Err(Error::file(
                            source,
                            format!(
                                "tensor {name:?} has shape {shape:?}; expected {:?}",
                                param.shape
                            ),
                        ))
                    }
                    None => {
                        return Err(Error::file(
                            source,
                            format!(
                                "tensor {name:?} is missing: the file holds no {} state for {}",
                                self.config.kind, param.name
                            ),
                        ))
                    }
                }
            }
        }
        self.steps = steps;
        Ok(())
    }

    /// One update of every parameter from its gradient, at learning rate `lr`: over the whole
    /// arenas at once when the model has them and nothing is frozen (the padding between
    /// tensors is 0 in values, gradients and state alike, and stays 0), else tensor by tensor.
    pub fn step(&mut self, backend: &mut B, model: &Model<B>, lr: f32) {
        self.steps += 1;
        // With eps = 0, Adam and RMSprop turn a zero gradient into 0/0 (as PyTorch does): NaN
        // in the padding, which no tensor should be near. Those update tensor by tensor.
        let zero_stays_zero = self.config.eps > 0.0
            || matches!(
                self.config.kind,
                OptimizerKind::Sgd | OptimizerKind::Momentum | OptimizerKind::Nesterov
            );
        let whole = !self.per_tensor && zero_stays_zero && !self.frozen.contains(&true);
        if let (Some(arena), Some((s1, s2)), true) = (&model.arena, &self.arenas, whole) {
            self.update(backend, &arena.values, &arena.grads, s1, s2, arena.len, lr);
            return;
        }
        model.for_each_param(|i, value, grad, len| {
            if !self.frozen[i] {
                let (s1, s2) = &self.state[i];
                self.update(backend, value, grad, s1, s2, len, lr);
            }
        });
    }

    /// The update of `len` values of `value` with this step's hyperparameters.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        backend: &mut B,
        value: &B::Buf,
        grad: &B::Buf,
        s1: &B::Buf,
        s2: &B::Buf,
        len: usize,
        lr: f32,
    ) {
        let c = &self.config;
        let t = self.steps as i32;
        match c.kind {
            OptimizerKind::Sgd | OptimizerKind::Momentum | OptimizerKind::Nesterov => {
                let h = SgdHyper {
                    lr,
                    momentum: c.momentum,
                    weight_decay: c.weight_decay,
                    nesterov: c.kind == OptimizerKind::Nesterov,
                    first_step: self.steps == 1,
                };
                backend.sgd_update(value, grad, s1, len, &h);
            }
            OptimizerKind::Adam | OptimizerKind::AdamW => {
                let h = AdamHyper {
                    lr,
                    beta1: c.beta1,
                    beta2: c.beta2,
                    eps: c.eps,
                    weight_decay: c.weight_decay,
                    decoupled: c.kind == OptimizerKind::AdamW,
                    bias_correction1: (1.0 - (c.beta1 as f64).powi(t)) as f32,
                    bias_correction2: (1.0 - (c.beta2 as f64).powi(t)) as f32,
                };
                backend.adam_update(value, grad, s1, s2, len, &h);
            }
            OptimizerKind::Rmsprop => {
                let h = RmspropHyper {
                    lr,
                    alpha: c.alpha,
                    eps: c.eps,
                    weight_decay: c.weight_decay,
                    momentum: c.momentum,
                };
                backend.rmsprop_update(value, grad, s1, s2, len, &h);
            }
        }
    }
}
