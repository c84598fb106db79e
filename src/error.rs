//! One error type for the library. Every message names the file, flag or limit involved and what
//! was expected, because the CLI prints it as is and exits non-zero.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data or checkpoint file that is missing, unreadable or malformed.
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },

    /// A command-line value or config field that is not acceptable.
    #[error("{flag}: {message}")]
    Config { flag: String, message: String },

    /// The GPU (adapter, device or one of its limits) cannot do what was asked.
    #[error("GPU: {0}")]
    Gpu(String),

    /// Training produced a non-finite loss: the run diverged.
    #[error(
        "training diverged: the loss of epoch {epoch} (steps {first_step}..={last_step}, \
         lr {lr:e}) is {loss}; try a smaller --lr{restored}"
    )]
    Diverged {
        epoch: usize,
        first_step: usize,
        last_step: usize,
        lr: f32,
        loss: f32,
        /// What the model holds now: ", the model is back at the end of epoch N", or "".
        restored: String,
    },

    /// The user stopped the run (Ctrl-C) after the step it was on.
    #[error("interrupted after step {step} (epoch {epoch})")]
    Interrupted { epoch: usize, step: usize },

    /// Any other failure, with a sentence that says what went wrong.
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::File { path: path.into(), message: message.into() }
    }
    pub fn config(flag: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { flag: flag.into(), message: message.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
