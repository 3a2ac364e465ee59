//! The `kiln` command line. Glue only: it parses arguments, calls the library crates and prints.
//!
//! Exit codes: 0 success, 1 a run-time failure (data, training, a failed check), 2 a usage or
//! config error (clap's own errors, a bad run file, an invalid setting, an unavailable device).

// The doc comments of `args` are clap's `--help` text, written for a terminal (`[N]`, `<class>`),
// not rustdoc markup.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

mod args;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use kiln_train::TrainError;
use kiln_train::config::{DataFormat, RunFile};
use kiln_train::runner::{self, Diagnosis, DiagnosisReport, RunConfig, RunEvent, RunOptions};

use args::{Cli, Command, TrainArgs};
use usage::Usage;

/// The vendored Fashion-MNIST subset (10,000 train / 2,000 test images), found from the source
/// tree so `cargo run` works from any directory.
const VENDORED_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/fashion-mnist-mini");

/// `println!` for the human-readable lines, or `eprintln!` when stdout is kept for `--json`.
macro_rules! say {
    ($json:expr, $($arg:tt)*) => {
        if $json {
            eprintln!($($arg)*)
        } else {
            println!($($arg)*)
        }
    };
}

fn main() -> ExitCode {
    // `kiln score … | head`: a reader that closes the pipe ends the process quietly, as it ends
    // other Unix tools, instead of `println!` panicking on the broken pipe (Rust ignores SIGPIPE).
    #[cfg(unix)]
    // SAFETY: restores SIGPIPE's default disposition before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Keep freed batch memory for reuse instead of page-faulting it back in every batch (glibc;
    // a no-op elsewhere). Measured in docs/data.md.
    kiln_data::alloc::tune_for_loading();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let sub = matches.subcommand().map_or(&matches, |(_, m)| m);
    let result = match &cli.command {
        Some(Command::Train(a)) => train(a, sub).map(|()| true),
        None => train(&cli.train, sub).map(|()| true),
        Some(Command::Doctor(a)) => diagnose(a, sub, Diagnosis::Doctor),
        Some(Command::LrFind { args, plot, steps }) => {
            let sweep = kiln_train::diagnose::LrFindConfig {
                steps: *steps,
                progress: !args.no_progress,
                ..Default::default()
            };
            let plot = Some(plot.clone());
            diagnose(args, sub, Diagnosis::LrFind { sweep, plot })
        }
        Some(Command::OverfitBatch { args, steps }) => diagnose(
            args,
            sub,
            Diagnosis::OverfitBatch {
                steps: *steps,
                target: 0.05,
            },
        ),
        Some(Command::Eval(a)) => commands::eval(a).map(|()| true),
        Some(Command::Predict(a)) => commands::predict(a).map(|()| true),
        Some(Command::Transform(a)) => commands::transform(a).map(|()| true),
        Some(Command::Stats(a)) => commands::stats(a).map(|()| true),
        Some(Command::Inspect(a)) => commands::inspect(a).map(|()| true),
        Some(Command::Import(a)) => commands::import(a).map(|()| true),
        Some(Command::Export(a)) => commands::export(a).map(|()| true),
        Some(Command::Score(a)) => commands::score(a).map(|()| true),
        Some(Command::MakeDetection(a)) => commands::make_detection(a).map(|()| true),
        Some(Command::Models { json }) => commands::models(*json).map(|()| true),
        Some(Command::Ablate { args, study, out_dir }) => run_file_allowing(args, sub, &["epochs"])
            .and_then(|file| {
                let out = out_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("runs").join(format!("ablate-{}", study.name())));
                ablate::ablate(file, *study, &out, args.json)
            })
            .map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {}{}", message(&e), hint(&e));
            if is_usage(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The error's chain as one line, each layer's text once: a layer whose message already ends
/// with its cause's (as `thiserror`'s `{source}` fields do) does not repeat it.
fn message(e: &anyhow::Error) -> String {
    let parts: Vec<String> = e.chain().map(ToString::to_string).collect();
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if parts[..i].iter().any(|earlier| earlier.contains(part.as_str())) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(part);
    }
    out
}

/// The command-line flags that answer an error the library reports in its own terms.
fn hint(e: &anyhow::Error) -> &'static str {
    use kiln_models::ModelError;
    for c in e.chain() {
        if let Some(kiln_train::DeviceError::Unusable { .. }) = c.downcast_ref() {
            return "\n  hint: --device flex trains on the CPU";
        }
        match c.downcast_ref::<TrainError>() {
            Some(TrainError::StartingWeights {
                source: ModelError::NormalizationMismatch { .. },
                ..
            }) => return "\n  hint: pass --allow-normalization-override to start from them anyway",
            Some(TrainError::CheckpointFailed {
                last_good: Some(_), ..
            }) => {
                return "\n  hint: `kiln train --resume RUN_DIR` continues from the last good checkpoint; --on-checkpoint-error continue trains on without checkpoints";
            }
            Some(TrainError::CheckpointFailed { last_good: None, .. }) => {
                return "\n  hint: --on-checkpoint-error continue trains on without checkpoints";
            }
            Some(TrainError::OutOfMemory {
                at: kiln_train::RunPoint::Evaluation { .. },
                ..
            }) => return "\n  hint: `kiln eval --batch-size N` evaluates in smaller batches",
            _ => {}
        }
    }
    ""
}

/// Whether an error is the user's invocation or settings (exit code 2) rather than a run-time
/// failure (1).
fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<Usage>()
            || c.is::<kiln_train::config::ConfigError>()
            || c.is::<kiln_train::DeviceError>()
            || matches!(
                c.downcast_ref::<kiln_models::ModelError>(),
                Some(kiln_models::ModelError::UnknownModel { .. })
            )
            || matches!(
                c.downcast_ref::<TrainError>(),
                Some(TrainError::InvalidConfig { .. } | TrainError::Device(_))
            )
    })
}

/// The run file of this invocation: `--config` (plus `--set`) or the flags, with `--device`,
/// `--devices`, `--out`, `--workers` and `--init-from` applied when given; validated and its data
/// resolved (format detected, defaults filled: printed to stderr).
fn run_file(args: &TrainArgs, matches: &clap::ArgMatches) -> anyhow::Result<RunFile> {
    run_file_allowing(args, matches, &[])
}

/// [`run_file`], with the training flags in `allowed` accepted next to --config (and applied).
fn run_file_allowing(
    args: &TrainArgs,
    matches: &clap::ArgMatches,
    allowed: &[&str],
) -> anyhow::Result<RunFile> {
    let mut file = match &args.config {
        Some(path) => {
            args::refuse_flags_with_config(matches, allowed)?;
            let mut file = RunFile::load(path, &args.set)?;
            if allowed.contains(&"epochs") && args::given(matches, "epochs") {
                file.train.epochs = args.epochs;
            }
            file
        }
        None => {
            let file = args::file_from_flags(args)?;
            if args.set.is_empty() {
                file
            } else {
                RunFile::parse(&file.to_toml()?, Path::new("(flags)"), &args.set)?
            }
        }
    };
    args::apply_run_flags(&mut file, args, matches)?;
    file.validate()?;
    resolve(&mut file)?;
    Ok(file)
}

/// The data of `file` found: the vendored subset when no folder is named, then the format
/// detected (notes on stderr).
fn resolve(file: &mut RunFile) -> anyhow::Result<()> {
    if file.data.path.is_none() {
        if !matches!(file.data.format, DataFormat::Auto | DataFormat::FashionMnist) {
            return Err(Usage(format!(
                "data.format = {:?} needs data.path (or --data): only Fashion-MNIST is vendored",
                file.data.format
            ))
            .into());
        }
        file.data.path = Some(PathBuf::from(VENDORED_DATA));
        file.data.format = DataFormat::FashionMnist;
        return Ok(());
    }
    let notes = file.resolve_data()?;
    // Under mpirun, rank 0 alone speaks (the others print only errors).
    if kiln_train::cluster::launched_as().is_none_or(|(rank, _)| rank == 0) {
        for note in notes {
            eprintln!("note: {note}");
        }
    }
    Ok(())
}

/// `kiln doctor`, `lr-find` and `overfit-batch`: the diagnosis on a fresh model, printed;
/// whether it passed.
fn diagnose(args: &TrainArgs, matches: &clap::ArgMatches, what: Diagnosis) -> anyhow::Result<bool> {
    let file = run_file(args, matches)?;
    let json = args.json;
    let (plot, start_lr) = match &what {
        Diagnosis::LrFind { sweep, plot } => (plot.clone().unwrap_or_default(), sweep.start_lr),
        _ => Default::default(),
    };
    let (ok, value) = match runner::diagnose(&file, what)? {
        DiagnosisReport::Doctor(report) => {
            if json {
                eprint!("{report}");
            } else {
                print!("{report}");
            }
            say!(
                json,
                "doctor: {}",
                if report.ok() {
                    "all checks passed"
                } else {
                    "some checks failed (see above)"
                }
            );
            (
                report.ok(),
                serde_json::json!({"ok": report.ok(), "report": &report}),
            )
        }
        DiagnosisReport::LrFind(r) => {
            match r.suggested {
                Some(lr) => say!(
                    json,
                    "lr-find: suggested lr {lr:.3e} ({} steps from {start_lr:.0e}); curve: {}",
                    r.lrs.len(),
                    plot.display()
                ),
                None => say!(
                    json,
                    "lr-find: the loss never fell; no suggestion (curve: {})",
                    plot.display()
                ),
            }
            (true, serde_json::json!({"result": &r, "plot": plot}))
        }
        DiagnosisReport::OverfitBatch(r) => {
            say!(json, "overfit-batch: {}", r.message);
            (r.passed, serde_json::to_value(&r)?)
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    Ok(ok)
}

fn train(args: &TrainArgs, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let file = match &args.resume {
        Some(dir) => {
            args::refuse_flags_with_resume(matches)?;
            let mut file = RunConfig::read(dir)
                .with_context(|| format!("--resume {}", dir.display()))?
                .config;
            if args::given(matches, "epochs") {
                file.train.epochs = args.epochs;
            }
            // Where it runs is this machine's choice; results do not depend on the worker count.
            args::apply_run_flags(&mut file, args, matches)?;
            file
        }
        None => run_file(args, matches)?,
    };
    let json = args.json;
    let epochs = file.train.epochs;
    let options = RunOptions {
        resume: args.resume.clone(),
        progress: !args.no_progress,
        allow_normalization_override: args.allow_normalization_override,
    };
    let mut print = |event: RunEvent<'_>| match event {
        RunEvent::Note(_) | RunEvent::Warning(_) => eprintln!("{event}"),
        RunEvent::Epoch(r) => {
            say!(json, "{}", r.line(epochs));
            if let Some(v) = r.verdict.as_deref().filter(|v| !v.starts_with("healthy")) {
                say!(json, "  verdict: {v}");
            }
        }
        RunEvent::Setup(line) => say!(json, "{line}"),
    };
    let Some(out) = run_train(file, &options, &mut print)? else {
        // A rank other than 0 of a run across processes: rank 0 reports.
        return Ok(());
    };
    if out.stopped_early {
        say!(json, "early stopping: no improvement for {} epochs", out.patience);
    }
    say!(json, "verdict: {}", out.verdict);
    say!(
        json,
        "saved: {} (best: {})",
        out.model.display(),
        out.best_model.display()
    );
    say!(json, "report: {}", out.report.display());
    let s = &out.summary;
    // Accuracy for a classifier; a detector's first COCO figures (the report has all twelve).
    let figures = match (s.test_acc, &s.coco) {
        (Some(acc), _) => format!("test_acc={acc:.4}"),
        (None, Some(c)) => format!(
            "{0}_AP={1:.4} {0}_AP50={2:.4}",
            c.split, c.metrics.stats[0], c.metrics.stats[1]
        ),
        (None, None) => String::new(),
    };
    say!(
        json,
        "summary: epochs={} train_images_per_s={:.1} test_loss={:.4} {} seconds={:.1}",
        s.epochs,
        s.train_images_per_s,
        s.test_loss,
        figures,
        s.seconds
    );
    if let Some(e) = &s.ema {
        say!(
            json,
            "averaged weights (train.ema): test_loss={:.4} test_acc={:.4} saved: {}",
            e.test_loss,
            e.test_acc,
            e.model.display()
        );
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out.to_json())?);
    }
    Ok(())
}

/// One process, or one rank of several when `mpirun`/`srun` started this one (feature `mpi`):
/// `None` on a rank other than 0.
fn run_train(
    file: kiln_train::RunFile,
    options: &RunOptions,
    print: &mut dyn FnMut(RunEvent<'_>),
) -> anyhow::Result<Option<runner::RunOutcome>> {
    let Some((rank, size)) = kiln_train::cluster::launched_as() else {
        return Ok(Some(runner::train(file, options, print)?));
    };
    #[cfg(feature = "mpi")]
    {
        use kiln_train::Cluster;
        let cluster = kiln_train::mpi::MpiCluster::init()?;
        if cluster.size() != size {
            // e.g. srun without an MPI plugin: every task is a world of its own.
            anyhow::bail!(
                "the launcher started this process as rank {rank} of {size}, but MPI sees {} process(es): the launcher and the MPI library do not talk (under Slurm use `srun --mpi=pmix` or `--mpi=pmi2`, or mpirun of the library kiln was built with)",
                cluster.size()
            );
        }
        match runner::train_rank(file, options, &cluster, print) {
            Ok(out) => Ok(out),
            Err(e) => {
                // The other ranks would wait for this one forever: end the whole job.
                let e = anyhow::Error::from(e);
                eprintln!(
                    "error: rank {} of {}: {}{}",
                    cluster.rank(),
                    cluster.size(),
                    message(&e),
                    hint(&e)
                );
                cluster.abort(1)
            }
        }
    }
    #[cfg(not(feature = "mpi"))]
    {
        let _ = (file, options, print);
        anyhow::bail!(
            "this kiln was started as rank {rank} of {size} processes (by mpirun or srun) but built without MPI: each process would train alone, all into the same run folder; build it with `cargo build --release --features mpi` (see docs/distributed.md), or start one process"
        )
    }
}

mod ablate;
mod commands;
mod usage;
