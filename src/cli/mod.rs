//! The `minordpo` command line: parsing and dispatch; each command lives in its own file.

mod bench;
mod demo;
mod devices;
mod eval;
mod generate;
mod merge;
mod plot;
mod sft;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::device::DeviceChoice;

#[derive(Parser)]
#[command(name = "minordpo", version, about, long_about = None)]
struct Cli {
    /// Where to run: `auto` picks a real GPU through wgpu when there is one and the CPU
    /// otherwise; `wgpu` accepts any adapter (software ones too); `cpu` (= `flex`) and
    /// `ndarray` are Burn's CPU backends.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    device: DeviceChoice,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the GPU adapters wgpu finds (name, type, graphics API) and what `auto` would pick;
    /// `--check` also tests minordpo's vocabulary-wide kernels on the `--device`.
    Devices(devices::DevicesArgs),
    /// Generate text from a Hugging Face model directory or GGUF file, streaming it to stdout.
    Generate(generate::GenerateArgs),
    /// Evaluate a policy (base + adapter) against the base model on preference pairs.
    Eval(eval::EvalArgs),
    /// Fold a LoRA adapter into the base weights and write a Hugging Face model directory or a GGUF file.
    Merge(merge::MergeArgs),
    /// Preference-tune a LoRA adapter with DPO, MinorDPO, DPOP, IPO or hinge loss. With no
    /// arguments: MinorDPO on the built-in arithmetic task (configs/default.ron), nothing to
    /// download.
    Train(Box<train::TrainArgs>),
    /// Supervised fine-tuning (completion-only loss): every weight or LoRA adapters.
    Sft(Box<sft::SftArgs>),
    /// The teaching demo: a tiny model learns arithmetic from scratch, then DPO and MinorDPO are
    /// compared on its own answers across learning rates and seeds; writes report.md and figures.
    Demo(demo::DemoArgs),
    /// Overlay the training curves of one or more runs (their metrics.jsonl) in one SVG.
    Plot(plot::PlotArgs),
    /// Time full LoRA-DPO training steps on synthetic tokens; prints one JSON line (tokens/s,
    /// median step time, peak memory, GFLOP/s).
    Bench(bench::BenchArgs),
}

/// Parses the command line, runs the command and turns an error into a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every command runs on one of rayon's workers, with a main thread's stack: each kernel's
    // parallel loop then runs on the calling worker and the others, instead of a blocked caller
    // waking the pool (and contending with its spinning threads) once per operation.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(MAIN_STACK_BYTES)
        .build_global();
    let result = rayon::scope(|_| run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The stack of each rayon worker (the whole command runs on one): what a main thread gets.
const MAIN_STACK_BYTES: usize = 8 << 20;

/// Runs the parsed command.
fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Devices(args) => devices::run(cli.device, args),
        Command::Generate(args) => generate::run(cli.device, args),
        Command::Eval(args) => eval::run(cli.device, args),
        Command::Merge(args) => merge::run(args),
        Command::Train(args) => train::run(cli.device, *args),
        Command::Sft(args) => sft::run(cli.device, *args),
        Command::Demo(args) => demo::run(cli.device, args),
        Command::Plot(args) => plot::run(args),
        Command::Bench(args) => bench::run(cli.device, args),
    }
}
