//! The `--model` grammar: `linear` or `mlp:H1[,H2...]`.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// A model as the user describes it: the widths of the hidden layers (none for `linear`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    pub hidden: Vec<usize>,
}

pub const GRAMMAR: &str = "linear | mlp:H1[,H2...] (hidden widths, e.g. mlp:256 or mlp:512,256)";

impl ModelSpec {
    pub fn linear() -> Self {
        ModelSpec { hidden: Vec::new() }
    }

    pub fn mlp(hidden: &[usize]) -> Self {
        ModelSpec { hidden: hidden.to_vec() }
    }

    /// `(in, out)` of every Linear layer for this input size and class count.
    pub fn layer_sizes(&self, input: usize, classes: usize) -> Result<Vec<(usize, usize)>> {
        if input == 0 || classes == 0 {
            return Err(Error::config(
                "--model",
                format!(
                    "{self} needs at least one input and one class (got {input} and {classes})"
                ),
            ));
        }
        let mut widths = vec![input];
        widths.extend(&self.hidden);
        widths.push(classes);
        Ok(widths.windows(2).map(|w| (w[0], w[1])).collect())
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.hidden.is_empty() {
            return write!(f, "linear");
        }
        let widths: Vec<String> = self.hidden.iter().map(|h| h.to_string()).collect();
        write!(f, "mlp:{}", widths.join(","))
    }
}

impl FromStr for ModelSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: String| Error::config("--model", format!("{why}; expected {GRAMMAR}"));
        let s = s.trim();
        if s == "linear" {
            return Ok(ModelSpec::linear());
        }
        let Some(widths) = s.strip_prefix("mlp:") else {
            return Err(bad(format!("unknown model {s:?}")));
        };
        let hidden = widths
            .split(',')
            .map(|w| match w.trim().parse::<usize>() {
                Ok(0) => Err(bad(format!("hidden width 0 in {s:?}"))),
                Ok(h) => Ok(h),
                Err(_) => Err(bad(format!("{w:?} in {s:?} is not a width"))),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelSpec { hidden })
    }
}
