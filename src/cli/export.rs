//! `steepest export --pytorch DIR --weights FILE`: a PyTorch script that continues the run.

use steepest::{Error, Result};

use crate::ExportArgs;

pub fn run(args: &ExportArgs) -> Result<()> {
    Err(Error::file(&args.weights, "export is not written yet"))
}
