//! The `steepest` command line: a thin layer over the library (see `src/cli/`).

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(
    name = "steepest",
    version,
    about = "Train image classifiers by gradient descent on any GPU (WGSL via wgpu) or the CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter wgpu finds and mark the one `--device gpu` picks.
    Devices,
    /// Train a classifier.
    Train(Box<TrainArgs>),
    /// Test loss, accuracy, per-class accuracy and confusion matrix of a checkpoint.
    Eval(EvalArgs),
    /// Top-k classes for image files (PNG, JPEG, GIF, BMP), from a checkpoint.
    Predict(PredictArgs),
    /// Matmul GFLOP/s and MLP and CNN training samples/s, CPU beside GPU.
    Bench(BenchArgs),
    /// Check this GPU against the CPU: every kernel at its check shapes and the presets'
    /// training shapes, then 20 steps of LeNet on both; exits non-zero on a mismatch.
    Doctor(DoctorArgs),
    /// What a checkpoint holds: model summary, metadata, the run's flags, tensor names and shapes.
    Inspect(InspectArgs),
    /// Loss and accuracy curves (train and test, one colour per run) from a --metrics file, as SVG.
    Plot(PlotArgs),
    /// Write a PyTorch training script (train.py, with the checkpoint beside it) that continues
    /// this checkpoint's run: the same model, data, normalisation, optimizer, schedule and
    /// augmentation; `python train.py` on one device, `torchrun --nproc-per-node N train.py`
    /// under DistributedDataParallel.
    Export(ExportArgs),
    /// The learning-rate range test: a short run with the rate rising exponentially; prints the
    /// suggested rate and plots loss against rate. Takes train's data, model and optimizer flags.
    LrFind(Box<LrFindArgs>),
}

/// Where the data comes from and which device runs the work.
#[derive(Args, Clone, Serialize, Deserialize)]
pub struct DataArgs {
    /// synthetic (built in, no download) | mnist | fashion-mnist | cifar10 | idx | folder (one
    /// subfolder of images per class, optionally inside train/ and val/).
    #[arg(long, default_value = "synthetic")]
    pub dataset: String,
    /// The data set's folder: the four IDX files (mnist, fashion-mnist, idx), the CIFAR-10
    /// binary batches, or the image folder. Downloads go here too [default for mnist,
    /// fashion-mnist and cifar10: ~/.cache/steepest/NAME].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Download mnist, fashion-mnist or cifar10 if missing, checking every file's published
    /// SHA-256.
    #[arg(long)]
    pub download: bool,
    /// Image folders: resize to N×N or WxH (centre crop to that aspect ratio, then resize)
    /// [default: the most common size among the training images].
    #[arg(long, value_name = "N|WxH")]
    pub image_size: Option<cli::ImageSize>,
    /// Image folders: auto (RGB if any training image has colour) | grey | rgb.
    #[arg(long, default_value = "auto")]
    pub color: String,
    /// Image folders without a val/ subfolder: the fraction of each class held out to validate.
    #[arg(long, default_value_t = 0.2, allow_hyphen_values = true)]
    pub val_split: f64,
    /// Image folders: above this many MiB of decoded images, decode batches on background
    /// threads as training goes instead of holding the set in memory.
    #[arg(long, default_value_t = 2048, value_name = "MIB")]
    pub memory_limit: usize,
    /// auto (a hardware GPU, else the CPU) | gpu (any adapter, software ones included) | cpu.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Pick the adapter whose name contains this (case-insensitive).
    #[arg(long)]
    pub adapter: Option<String>,
    /// Use only the first N test samples.
    #[arg(long)]
    pub limit_test: Option<usize>,
    /// Train and evaluate on these classes only (names or indices, e.g. cat,dog or 3,5),
    /// relabelled in the order given.
    #[arg(long, value_name = "A,B,...")]
    pub classes: Option<String>,
}

/// Every `train` flag; as JSON (field names as keys) it is the run's configuration, stored in
/// checkpoints and read back by `--resume`.
#[derive(Args, Clone, Serialize, Deserialize)]
pub struct TrainArgs {
    /// Read flags from a TOML file (every flag as a key: `epochs = 10`, `batch-size = 64`,
    /// `model = "lenet"`); flags on the command line win.
    #[arg(long, value_name = "FILE.toml")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub data: DataArgs,
    /// A preset (lenet, cifar-cnn, resnet8, resnet20, cifar-fast), linear, mlp:H1[,H2...] or a
    /// layer list with residual blocks; `--model help` explains (input and output sizes come
    /// from the data).
    #[arg(long, default_value = "mlp:256")]
    pub model: String,
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// sgd | momentum | nesterov | adam | adamw | rmsprop.
    #[arg(long, default_value = "adam")]
    pub optimizer: String,
    /// Learning rate, or auto: a learning-rate range test (`steepest lr-find`) picks it first
    /// [default: PyTorch's for the optimizer: 1e-3, RMSprop 1e-2].
    #[arg(long, allow_hyphen_values = true, value_name = "F|auto")]
    pub lr: Option<cli::LrFlag>,
    /// Momentum [default: 0.9 for momentum and nesterov, else 0].
    #[arg(long, allow_hyphen_values = true)]
    pub momentum: Option<f32>,
    /// Weight decay [default: 0.01 for adamw, else 0].
    #[arg(long, allow_hyphen_values = true)]
    pub weight_decay: Option<f32>,
    #[arg(long, default_value_t = 0.9, allow_hyphen_values = true)]
    pub beta1: f32,
    #[arg(long, default_value_t = 0.999, allow_hyphen_values = true)]
    pub beta2: f32,
    #[arg(long, default_value_t = 1e-8, allow_hyphen_values = true)]
    pub eps: f32,
    /// RMSprop's smoothing constant.
    #[arg(long, default_value_t = 0.99, allow_hyphen_values = true)]
    pub alpha: f32,
    /// constant | step:EVERY_EPOCHS:GAMMA | cosine.
    #[arg(long, default_value = "constant")]
    pub schedule: String,
    /// Rise linearly from 0 to the learning rate over the first N steps.
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep the data set's order instead of shuffling each epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Drop the last partial batch of each epoch.
    #[arg(long)]
    pub drop_last: bool,
    /// Use only the first N training samples.
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Per-channel input normalisation: none, auto (the training set's mean and std, stored in
    /// the checkpoint) or MEAN,STD per channel (e.g. 0.1307,0.3081 or six values for RGB).
    #[arg(long, default_value = "none")]
    pub normalize: String,
    /// Training augmentation: none, or a list of crop:PAD (random crop of the zero-padded image)
    /// and flip (random left-right mirror), e.g. crop:4,flip.
    #[arg(long, default_value = "none")]
    pub augment: String,
    /// Label smoothing ε of the training loss, as PyTorch's CrossEntropyLoss(label_smoothing=ε):
    /// the target keeps 1-ε on the label and spreads ε over all classes (0.1 is common). The
    /// test loss stays plain cross-entropy.
    #[arg(long, default_value_t = 0.0, value_name = "EPS")]
    pub label_smoothing: f32,
    /// Test-time augmentation of each epoch's evaluation: none, or flip (score the mean of the
    /// logits of each test image and its mirror; twice the evaluation's forward passes).
    #[arg(long, default_value = "none")]
    pub tta: String,
    /// Start from these weights (safetensors with PyTorch state_dict names).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Save the trained weights here (safetensors, PyTorch state_dict names), and beside it
    /// NAME.resume.safetensors: what --resume needs to continue the run.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Also save every N epochs (the --save file and its resume file, and a copy of the
    /// weights as NAME.epochE.safetensors), so a crash loses at most N epochs.
    #[arg(long, value_name = "N")]
    pub save_every: Option<usize>,
    /// Leave these parameters as they are: comma-separated state_dict name prefixes of whole
    /// dot-separated parts (e.g. 0.,3.body or layer1; 1 never covers 10); `steepest inspect`
    /// lists the names.
    #[arg(long, value_name = "PREFIXES")]
    pub freeze: Option<String>,
    /// Keep the best epoch's weights in --save (by --best-by), not the last epoch's; the
    /// resume file still holds the latest state.
    #[arg(long)]
    pub save_best: bool,
    /// What makes an epoch the best: accuracy (test accuracy, higher) | loss (test loss, lower);
    /// the training set's when there is no test set.
    #[arg(long, default_value = "accuracy")]
    pub best_by: String,
    /// Stop after N epochs in a row without a new best (by --best-by).
    #[arg(long, value_name = "N")]
    pub early_stop: Option<usize>,
    /// Draw loss and accuracy curves into this SVG at the end (every run in --metrics when
    /// given, else this run).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Print the end-of-run summary as one JSON object on stdout (the report goes to stderr).
    #[arg(long)]
    #[serde(skip)]
    pub json: bool,
    /// Continue the run saved in FILE (NAME.safetensors or NAME.resume.safetensors): its
    /// weights, optimizer state, position, and every flag not given again (--epochs N to
    /// train longer).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// Append one JSON object per epoch to this file (and per --log-every steps).
    #[arg(long)]
    pub metrics: Option<PathBuf>,
    /// Also append the running train loss and accuracy to --metrics every N steps.
    #[arg(long, value_name = "STEPS")]
    pub log_every: Option<usize>,
    /// Print only errors.
    #[arg(long)]
    pub quiet: bool,
    /// GPU: time every kernel with timestamp queries and print each one's share of a step at
    /// the end (each submit then waits for its times, so the run itself is slower).
    #[arg(long)]
    pub profile: bool,
    /// The flags given on the command line (not defaults): those win over a resumed run's.
    #[arg(skip)]
    #[serde(skip)]
    pub given: Vec<String>,
    /// The run's id, written in every metrics line (kept by --resume: one run, one id).
    #[arg(skip)]
    pub run_id: Option<String>,
}

#[derive(Args)]
pub struct EvalArgs {
    /// The checkpoint to evaluate. The data set, its folder, image size and colour default to
    /// those it was trained with.
    #[arg(long)]
    pub weights: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Print one JSON object with test_loss, test_acc and samples.
    #[arg(long)]
    pub json: bool,
    /// Test-time augmentation: none, or flip (the mean of the logits of each image and its
    /// mirror) [default: the run's --tta]
    #[arg(long)]
    pub tta: Option<String>,
    /// The flags given on the command line: the others come from the checkpoint's run.
    #[arg(skip)]
    pub given: Vec<String>,
}

#[derive(Args)]
pub struct PredictArgs {
    /// The checkpoint (its metadata gives the input size, class names and normalisation).
    #[arg(long)]
    pub weights: PathBuf,
    /// Image files, and folders (walked for .png, .jpg, .jpeg, .gif and .bmp files), to
    /// classify.
    #[arg(value_name = "IMAGE|DIR")]
    pub images: Vec<PathBuf>,
    /// How many classes to show per image, most likely first.
    #[arg(long, default_value_t = 3)]
    pub top_k: usize,
    /// One JSON object per line and image: its file and top classes with probabilities (or
    /// the error that kept it from being read).
    #[arg(long)]
    pub json: bool,
    /// auto | gpu | cpu.
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long)]
    pub adapter: Option<String>,
    /// Test-time augmentation: none, or flip (the mean of the logits of each image and its
    /// mirror) [default: the run's --tta]
    #[arg(long)]
    pub tta: Option<String>,
}

#[derive(Args)]
pub struct LrFindArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    /// The first step's learning rate.
    #[arg(long, default_value_t = 1e-7)]
    pub start_lr: f32,
    /// The last step's learning rate (the test stops earlier if the loss blows up).
    #[arg(long, default_value_t = 10.0)]
    pub end_lr: f32,
    /// Steps from the first rate to the last.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
}

#[derive(Args)]
pub struct DoctorArgs {
    /// The adapter whose name contains this (default: the one `--device gpu` takes).
    #[arg(long)]
    pub adapter: Option<String>,
    /// Only the checks whose kernel name contains this (e.g. matmul, conv2d, adam).
    #[arg(long)]
    pub only: Option<String>,
    /// Print one JSON object with every check instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The checkpoint to continue from (its metadata gives the model, data and run flags).
    #[arg(long)]
    pub weights: PathBuf,
    /// The folder to write train.py and model.safetensors into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub pytorch: PathBuf,
}

#[derive(Args)]
pub struct PlotArgs {
    /// The JSON lines `train --metrics` wrote.
    pub metrics: PathBuf,
    /// Where to write the SVG [default: the metrics file's name with .svg].
    #[arg(short, long, value_name = "FILE.svg")]
    pub output: Option<PathBuf>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// The checkpoint (or NAME.resume.safetensors).
    pub file: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Print only the run's flags, as a TOML file for `train --config`.
    #[arg(long)]
    pub config: bool,
}

#[derive(Args)]
pub struct BenchArgs {
    /// cpu | gpu | both.
    #[arg(long, default_value = "both")]
    pub device: String,
    /// Square matmul sizes.
    #[arg(long, default_value = "256,512,1024", value_delimiter = ',')]
    pub sizes: Vec<usize>,
    /// Training workloads to time: mlp (784-256-10), lenet (the LeNet-style CNN), resnet8,
    /// resnet20 and cifar-cnn (on 3x32x32 images), or none.
    #[arg(long, default_value = "mlp,lenet", value_delimiter = ',')]
    pub models: Vec<String>,
    #[arg(long)]
    pub adapter: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The flags of `command` given on the command line (not defaults), by field name.
fn given(matches: &clap::ArgMatches, command: &str) -> Vec<String> {
    let Some(sub) = matches.subcommand_matches(command) else { return Vec::new() };
    sub.ids()
        .filter(|id| sub.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.to_string())
        .collect()
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, which turns a closed pipe (`steepest train --model help | head`)
    // into a panic inside println!; the default action ends the process quietly instead.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Headless Linux: without a display, Mesa's EGL (probed for wgpu's GL backend) tries
    // Wayland and prints "error: XDG_RUNTIME_DIR is invalid or not set"; the surfaceless
    // platform needs no display and prints nothing. Set before any thread starts.
    #[cfg(target_os = "linux")]
    if ["EGL_PLATFORM", "WAYLAND_DISPLAY", "DISPLAY"].iter().all(|v| std::env::var_os(v).is_none())
    {
        std::env::set_var("EGL_PLATFORM", "surfaceless");
    }
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Devices => cli::devices::run(),
        Command::Train(mut args) => {
            args.given = given(&matches, "train");
            cli::interrupt::install();
            cli::train::run(&args)
        }
        Command::Eval(mut args) => {
            args.given = given(&matches, "eval");
            cli::eval::run(&args)
        }
        Command::Predict(args) => cli::predict::run(&args),
        Command::Bench(args) => cli::bench::run(&args),
        Command::Inspect(args) => cli::inspect::run(&args),
        Command::Plot(args) => cli::plot::run(&args),
        Command::Doctor(args) => cli::doctor::run(&args),
        Command::Export(args) => cli::export::run(&args),
        Command::LrFind(mut args) => {
            args.train.given = given(&matches, "lr-find");
            cli::lr_find::run(&args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(steepest::Error::Interrupted { .. }) => ExitCode::from(cli::interrupt::EXIT_CODE),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
