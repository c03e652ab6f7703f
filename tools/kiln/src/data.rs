//! The data set and thread options every data-reading command takes, and where the bundled data is.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use kiln_train::data::{self, Mnist};

#[derive(Args, Debug)]
pub struct DataArgs {
    /// Directory with the four standard MNIST files (gzip or raw), e.g. /usr/share/datasets/fashion-mnist.
    /// Defaults to the bundled data/mnist.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

/// Sizes rayon's global pool as `--threads` says.
pub fn set_threads(data: &DataArgs) -> Result<()> {
    if let Some(n) = data.threads {
        rayon::ThreadPoolBuilder::new().num_threads(n as usize).build_global().context("starting worker threads")?;
    }
    Ok(())
}

/// `--threads`, else every core: the packed-model evaluator's worker count.
pub fn threads(data: &DataArgs) -> usize {
    data.threads.map(|t| t as usize).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The data directory: `--data`, else the bundled set found from the working directory or the binary.
pub fn load_data(data: &DataArgs) -> Result<Mnist> {
    let dir = match &data.data {
        Some(dir) => dir.clone(),
        None => bundled_dir().context(
            "no --data given and the bundled data/mnist was not found (run from the repository, or pass --data DIR)",
        )?,
    };
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    Ok(Mnist::load(&dir)?)
}

pub fn bundled_dir() -> Option<PathBuf> {
    let from_cwd = PathBuf::from(data::BUNDLED_DIR);
    if from_cwd.is_dir() {
        return Some(from_cwd);
    }
    // The binary lives in <repo>/target/<profile>/kiln (or a shared CARGO_TARGET_DIR): try the source tree.
    let from_source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(data::BUNDLED_DIR);
    from_source.is_dir().then_some(from_source)
}
