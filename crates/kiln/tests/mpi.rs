//! `mpirun -np 2 kiln train`: two processes train one model (feature `mpi`; Open MPI's `mpirun`
//! on the PATH, as `.ci/run` installs it).
#![cfg(feature = "mpi")]

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use burn::prelude::*;
use kiln_models::MlpConfig;

/// `mpirun -np N kiln ARGS` (root allowed: CI runs as root; more ranks than cores allowed).
fn mpirun(np: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(np.to_string())
        .arg(env!("CARGO_BIN_EXE_kiln"));
    c
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn succeeded(out: &Output) -> String {
    let (stdout, stderr) = text(out);
    assert!(
        out.status.success(),
        "{}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

/// A tiny run without BatchNorm (each rank would normalise its shard by its own statistics):
/// an MLP on 512 real Fashion-MNIST images, global batch 128 (64 per rank on 2 ranks), over
/// `epochs`.
fn setup(root: &Path, epochs: usize) -> PathBuf {
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    common::write_tiny_fashion_mnist(&data, 512, 64).unwrap();
    let config = root.join("run.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[data]
path = "data"

[model]
name = "mlp"
widths = [32]
batch_norm = false

[train]
epochs = {epochs}
batch_size = 128
lr = 0.1
seed = 3
"#
        ),
    )
    .unwrap();
    config
}

fn train_args(config: &Path, out: &Path) -> Vec<std::ffi::OsString> {
    vec![
        "train".into(),
        "--no-progress".into(),
        "--config".into(),
        config.into(),
        "--out".into(),
        out.into(),
    ]
}

fn weights(run: &Path) -> Vec<f32> {
    let device = Device::flex();
    let model = MlpConfig::new(vec![32])
        .with_batch_norm(false)
        .init(&device)
        .unwrap();
    let (model, _) = kiln_models::weights::load_weights(model, &run.join("model.bpk")).unwrap();
    struct Flat(Vec<f32>);
    impl burn::module::ModuleVisitor for Flat {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            self.0.extend(param.val().into_data().iter::<f32>());
        }
    }
    let mut v = Flat(Vec::new());
    burn::module::Module::visit(&model, &mut v);
    v.0
}

/// The epoch lines without their timings (`… 1234 img/s  0.5s`).
fn epoch_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with("epoch "))
        .map(|l| l.split("  ").take(4).collect::<Vec<_>>().join("  "))
        .collect()
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            for timing in ["train_images_per_s", "seconds", "step_losses"] {
                v.as_object_mut().unwrap().remove(timing);
            }
            v
        })
        .collect()
}

/// Largest weight difference relative to the largest weight.
fn relative_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let largest = b.iter().fold(0f32, |m, w| m.max(w.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / largest
}

fn round4(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", round4(v)))
            .collect::<Vec<_>>()
            .join(" "),
        serde_json::Value::Number(n) => format!("{:.4}", n.as_f64().unwrap()),
        other => other.to_string(),
    }
}

#[test]
fn two_ranks_train_the_model_one_process_trains_and_resume_across_ranks() {
    let root = tempfile::tempdir().unwrap();
    let config = setup(root.path(), 2);
    let one = root.path().join("one");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(train_args(&config, &one))
        .output()
        .unwrap();
    let one_stdout = succeeded(&out);

    let two = root.path().join("two");
    let out = mpirun(2).args(train_args(&config, &two)).output().unwrap();
    let two_stdout = succeeded(&out);
    // Rank 0 alone reports: one setup block, one line per epoch.
    assert_eq!(two_stdout.matches("kiln train: ").count(), 1, "{two_stdout}");
    assert!(two_stdout.contains("× 2 processes (MPI"), "{two_stdout}");
    assert_eq!(
        epoch_lines(&two_stdout),
        epoch_lines(&one_stdout),
        "{two_stdout}\n{one_stdout}"
    );
    let (m1, m2) = (metrics(&one), metrics(&two));
    assert_eq!(m1.len(), 2);
    assert_eq!(
        m1.iter().map(round4).collect::<Vec<_>>(),
        m2.iter().map(round4).collect::<Vec<_>>()
    );
    let d = relative_diff(&weights(&two), &weights(&one));
    assert!(d < 1e-5, "weights differ by {d:e} relative");
    eprintln!("2 ranks vs 1 process: weights within {d:.1e} relative; metrics equal to 4 digits");

    // The same run stopped after epoch 1 (its second checkpoint and end removed), resumed on 2
    // ranks: every rank restores rank 0's checkpoint and the run ends as the straight one did.
    let cut = root.path().join("cut");
    copy_dir(&two, &cut);
    std::fs::remove_dir_all(cut.join("checkpoints/epoch-0002")).unwrap();
    std::fs::remove_file(cut.join("summary.json")).unwrap();
    std::fs::remove_file(cut.join("model.bpk")).unwrap();
    let out = mpirun(2)
        .args(["train", "--no-progress", "--resume"])
        .arg(&cut)
        .output()
        .unwrap();
    let resumed = succeeded(&out);
    assert!(resumed.contains("resuming"), "{resumed}");
    assert_eq!(
        metrics(&cut).iter().map(round4).collect::<Vec<_>>(),
        m2.iter().map(round4).collect::<Vec<_>>()
    );
    let d = relative_diff(&weights(&cut), &weights(&two));
    assert!(d < 1e-5, "resumed weights differ by {d:e} relative");
}

#[test]
fn ranks_started_on_different_runs_are_refused_before_anything_is_written() {
    let root = tempfile::tempdir().unwrap();
    let config = setup(root.path(), 1);
    let out_dir = root.path().join("out");
    // Open MPI's MPMD form: rank 0 and rank 1 get different command lines.
    let out = Command::new("mpirun")
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            "1",
            env!("CARGO_BIN_EXE_kiln"),
        ])
        .args(train_args(&config, &out_dir))
        .args([":", "-np", "1", env!("CARGO_BIN_EXE_kiln")])
        .args(train_args(&config, &out_dir))
        .args(["--set", "train.lr=0.2"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("rank 1 was started on another run than rank 0 (config differ)"),
        "{stderr}"
    );
    assert!(!out_dir.exists(), "a run folder was made");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `mpirun -np 2 kiln train` on `config` into `out`, in the background, its stderr kept.
fn start_job(config: &Path, out: &Path) -> std::process::Child {
    mpirun(2)
        .args(train_args(config, out))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The job's exit status and stderr, once it ends within 60 s (`hung` otherwise).
fn end_of(child: &mut std::process::Child, hung: &str) -> (std::process::ExitStatus, String) {
    let status = wait_for(child, Duration::from_secs(60)).expect(hung);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

/// Waits up to `limit` for `child`; `None` if it is still running (then killed).
fn wait_for(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    None
}

/// The pid of the rank-`rank` process whose command line mentions `marker`.
fn rank_pid(rank: usize, marker: &str) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let has = |hay: &[u8], needle: &str| hay.split(|&b| b == 0).any(|p| p == needle.as_bytes());
        if String::from_utf8_lossy(&cmdline).contains(marker) && has(&environ, &want) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn a_killed_rank_ends_the_job_and_the_last_checkpoint_stays() {
    let root = tempfile::tempdir().unwrap();
    let config = setup(root.path(), 500);
    let out_dir = root.path().join("killed");
    let mut child = start_job(&config, &out_dir);
    let checkpoints = out_dir.join("checkpoints");
    let start = Instant::now();
    while kiln_train::checkpoint::latest(&checkpoints).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint after 2 minutes"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before its first checkpoint"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let marker = out_dir.to_string_lossy().into_owned();
    let pid = rank_pid(1, &marker).expect("rank 1's process");
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let t = Instant::now();
    let (status, stderr) = end_of(&mut child, "the job still runs 60 s after rank 1 was killed");
    assert!(!status.success());
    assert!(stderr.contains("exited on signal 9"), "{stderr}");
    eprintln!(
        "the job ended {:.1} s after rank 1 was killed",
        t.elapsed().as_secs_f64()
    );
    let last = kiln_train::checkpoint::latest(&checkpoints).expect("a checkpoint");
    let state = kiln_train::checkpoint::read_state(&last).unwrap();
    assert!(state.epoch >= 1 && state.epoch < 500, "{}", state.epoch);
}

#[test]
fn an_error_on_one_rank_ends_every_rank() {
    let root = tempfile::tempdir().unwrap();
    let config = setup(root.path(), 500);
    // Only rank 0 writes the run folder: it finds it taken and fails while rank 1 waits for it
    // in the first step.
    let out_dir = root.path().join("taken");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(out_dir.join("keep.txt"), "mine").unwrap();
    let mut child = start_job(&config, &out_dir);
    let (status, stderr) = end_of(&mut child, "the job still runs after 60 s");
    assert!(!status.success());
    assert!(
        stderr.contains("error: rank 0 of 2: output directory"),
        "{stderr}"
    );
    assert!(!out_dir.join("config.json").exists(), "the folder was written to");
    assert_eq!(std::fs::read_to_string(out_dir.join("keep.txt")).unwrap(), "mine");
}
