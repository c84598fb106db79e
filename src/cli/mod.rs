//! The commands behind `steepest <command>`.

pub mod bench;
pub mod devices;
pub mod eval;
pub mod train;

use steepest::data::{self, Dataset};
use steepest::device::{AnyBackend, DeviceChoice};
use steepest::Result;

use crate::DataArgs;

/// Loads the data set the flags name and applies `--limit-test`.
pub fn load_data(args: &DataArgs) -> Result<Dataset> {
    let mut data = data::open(&args.dataset, args.data_dir.as_deref())?;
    if let Some(n) = args.limit_test {
        let size = data.sample_size();
        data.test.truncate(n, size);
    }
    Ok(data)
}

/// Opens the device the flags ask for and says which one it is (always, on stderr).
pub fn open_device(args: &DataArgs) -> Result<AnyBackend> {
    let choice: DeviceChoice = args.device.parse()?;
    let backend =
        AnyBackend::open(choice, args.adapter.as_deref(), &mut |n| eprintln!("note: {n}"))?;
    eprintln!("device: {}", backend.describe());
    Ok(backend)
}
