//! steepest: mini-batch gradient descent for image classifiers on any GPU (WGSL compute shaders
//! through wgpu) and on the CPU (an ndarray reference that trains to the same numbers).
//!
//! Where things are: the op list is [`backend::Backend`]; each op's CPU code is in `src/cpu/`,
//! its WGSL in `shaders/` (same file and function names), its cross-check in
//! `tests/cross_check_*.rs`. Layers are in [`nn`], optimizers in [`optim`], the loop in [`train`].
//!
//! ```no_run
//! use steepest::{cpu::CpuBackend, data, nn::{Model, ModelSpec}, optim::{OptimizerConfig, OptimizerKind}, train};
//! let data = data::synthetic::generate(0, 12_000, 2_000);
//! let mut cpu = CpuBackend::new();
//! let model = Model::new(&mut cpu, &"mlp:256".parse::<ModelSpec>()?, data.sample_size(), data.num_classes, 0)?;
//! let cfg = train::TrainConfig::new(OptimizerConfig::new(OptimizerKind::Adam));
//! let reports = train::train(&mut cpu, &model, &data, &cfg, &mut train::Silent)?;
//! println!("test accuracy {:?}", reports.last().and_then(|r| r.test_acc));
//! # Ok::<(), steepest::Error>(())
//! ```

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod checks;
pub mod cpu;
pub mod data;
pub mod device;
pub mod error;
pub mod gpu;
pub mod lr_find;
pub mod nn;
pub mod optim;
pub mod schedule;
pub mod train;

pub use error::{Error, Result};
