//! The `kiln` binary as a user runs it.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::process::Command;

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

/// `kiln train` on `data` for `epochs` epochs of batch 32, into `out`.
fn train_tiny(data: &std::path::Path, out: &std::path::Path, epochs: &str) -> std::process::Output {
    kiln()
        .args([
            "train",
            "--epochs",
            epochs,
            "--batch-size",
            "32",
            "--no-progress",
            "--data",
        ])
        .arg(data)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// `kiln train --no-progress --config CONFIG --out OUT`.
fn train_config(
    config: impl AsRef<std::ffi::OsStr>,
    out: impl AsRef<std::ffi::OsStr>,
) -> std::process::Output {
    kiln()
        .args(["train", "--no-progress", "--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// Asserts that the command succeeded (showing both streams if not) and returns its stdout.
fn succeeded(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_is_a_clear_error() {
    let out = kiln()
        .args(["--device", "cuda", "--no-progress"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`cuda` feature"), "{stderr}");
    assert!(stderr.contains("--features cuda"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // It fails before touching data or creating a run directory.
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
}

#[test]
fn unknown_device_lists_the_choices() {
    let out = kiln().args(["train", "--device", "tpu"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown device `tpu`") && stderr.contains("cuda:N"),
        "{stderr}"
    );
}

#[test]
fn bad_device_lists_and_augmentations_fail_before_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    for (args, expected) in [
        (&["--devices", "flex,wgpu"][..], "must all be of one backend"),
        (
            &["--devices", "flex,flex,flex"][..],
            "split evenly over the 3 devices (e.g. 126)",
        ),
        (&["--augment", "crop=2,blur"][..], "unknown item `blur`"),
        (
            &["--augment", "flip=2"][..],
            "probability must be a number in [0, 1]",
        ),
    ] {
        let out = kiln()
            .arg("train")
            .args(args)
            .arg("--out")
            .arg(&out_dir)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!out_dir.exists(), "{args:?} created the run directory");
    }
}

#[test]
fn missing_data_dir_shows_given_resolved_and_cwd() {
    let cwd = tempfile::tempdir().unwrap();
    let out = kiln()
        .current_dir(cwd.path())
        .args(["--data", "no/such/fmnist"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let cwd_abs = std::fs::canonicalize(cwd.path()).unwrap();
    assert!(stderr.contains("no/such/fmnist (as given)"), "{stderr}");
    assert!(
        stderr.contains(&cwd_abs.join("no/such/fmnist").display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("current directory: {}", cwd_abs.display())),
        "{stderr}"
    );
}

#[test]
fn trains_on_a_tiny_real_subset_and_writes_the_run() {
    let data = tempfile::tempdir().unwrap();
    common::write_tiny_fashion_mnist(data.path(), 256, 64).unwrap();
    let runs = tempfile::tempdir().unwrap();
    let out_dir = runs.path().join("r1");
    let out = train_tiny(data.path(), &out_dir, "2");
    let stdout = succeeded(&out);
    assert!(
        stdout.contains("epoch 1/2") && stdout.contains("epoch 2/2"),
        "{stdout}"
    );
    assert!(stdout.contains("val_acc="), "{stdout}");
    let acc: f64 = stdout
        .split("test_acc=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no test_acc in {stdout}"));
    assert!((0.0..=1.0).contains(&acc));
    for f in [
        "config.json",
        "metrics.jsonl",
        "metrics.csv",
        "report.md",
        "loss.png",
        "accuracy.png",
        "lr.png",
        "model.bpk",
        "model.bpk.kiln.json",
        "summary.json",
        "checkpoints/best.bpk",
        "checkpoints/epoch-0001/state.json",
        "checkpoints/epoch-0002/optimizer.bpk",
    ] {
        assert!(out_dir.join(f).is_file(), "{f} missing");
    }
    // The model's layers, and the totals on stdout (the reference CNN's count, see
    // kiln-models' reference_cnn tests: 421,866 + 448 BatchNorm statistics).
    let layers = std::fs::read_to_string(out_dir.join("model.txt")).unwrap();
    assert_eq!(layers.lines().count(), 7, "{layers}");
    assert!(stdout.contains("model: 422314 parameters"), "{stdout}");
    // The weights carry their preprocessing and classes.
    let spec = kiln_models::PretrainedSpec::load_next_to(&out_dir.join("model.bpk")).unwrap();
    assert_eq!(
        spec.normalization,
        kiln_transforms::NormalizationSpec::FashionMnist
    );
    assert_eq!(
        (spec.input_chw, spec.num_classes, spec.class_names.len()),
        ([1, 28, 28], 10, 10)
    );
    let metrics = std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    let config = std::fs::read_to_string(out_dir.join("config.json")).unwrap();
    assert!(
        config.contains("\"dampening\": 0.0")
            && config.contains("\"name\": \"sgd\"")
            && config.contains("\"device\": \"flex\""),
        "{config}"
    );

    // A second run into the same directory is refused rather than mixed in.
    let again = kiln()
        .args(["--no-progress", "--data"])
        .arg(data.path())
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    // The report says how the run went.
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(
        report.contains("## Verdict:")
            && report.contains("## Test confusion matrix")
            && report.contains("T-shirt/top"),
        "{report}"
    );

    // Resume: drop the last checkpoint as if the process died during epoch 2; the resumed run
    // reaches the same epoch-2 metrics and rewrites the log and report.
    let metrics_before = std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap();
    std::fs::remove_dir_all(out_dir.join("checkpoints/epoch-0002")).unwrap();
    let resumed = kiln()
        .args(["train", "--no-progress", "--resume"])
        .arg(&out_dir)
        .output()
        .unwrap();
    let stdout = succeeded(&resumed);
    assert!(
        stdout.contains("resuming") && stdout.contains("after epoch 1 of 2"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("epoch 1/2") && stdout.contains("epoch 2/2"),
        "{stdout}"
    );
    let metrics_after = std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap();
    let losses = |text: &str| -> Vec<(f64, f64)> {
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["train_loss"].as_f64().unwrap(), v["val_loss"].as_f64().unwrap())
            })
            .collect()
    };
    assert_eq!(
        losses(&metrics_after),
        losses(&metrics_before),
        "same metrics after the resume"
    );
    let nothing = tempfile::tempdir().unwrap();
    std::fs::write(nothing.path().join("config.json"), "{}").unwrap();
    let bad = kiln()
        .args(["train", "--resume"])
        .arg(nothing.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--resume"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // Continuing from the saved weights: their spec is checked against this run's normalization.
    let weights = out_dir.join("model.bpk");
    let from = |extra: &[&str], out: &str| {
        kiln()
            .args([
                "train",
                "--epochs",
                "1",
                "--batch-size",
                "32",
                "--no-progress",
                "--data",
            ])
            .arg(data.path())
            .arg("--init-from")
            .arg(&weights)
            .args(extra)
            .arg("--out")
            .arg(runs.path().join(out))
            .output()
            .unwrap()
    };
    let ok = from(&[], "r2");
    let stdout = succeeded(&ok);
    assert!(
        stdout.contains("init:  ") && stdout.contains("model.bpk"),
        "{stdout}"
    );
    // Weights that say they were trained with CIFAR-10 statistics are refused, showing both.
    let sidecar = out_dir.join("model.bpk.kiln.json");
    let json = std::fs::read_to_string(&sidecar).unwrap();
    std::fs::write(&sidecar, json.replace("fashion-mnist", "cifar10")).unwrap();
    let refused = from(&[], "r3");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("cifar10")
            && stderr.contains("fashion-mnist")
            && stderr.contains("run.init_from")
            && stderr.contains("--allow-normalization-override"),
        "{stderr}"
    );
    assert!(
        !runs.path().join("r3").exists(),
        "refused before creating the run"
    );
    let forced = from(&["--allow-normalization-override"], "r4");
    succeeded(&forced);
}

#[test]
fn doctor_overfit_batch_and_lr_find_run_on_the_train_flags() {
    let data = tempfile::tempdir().unwrap();
    common::write_tiny_fashion_mnist(data.path(), 128, 16).unwrap();
    let run = |args: &[&str]| {
        let out = kiln().args(args).arg("--data").arg(data.path()).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = run(&["doctor", "--batch-size", "32"]);
    assert!(
        ok && text.contains("all checks passed") && text.contains("initial loss"),
        "{text}"
    );
    let (ok, text) = run(&["overfit-batch", "--batch-size", "16"]);
    assert!(ok && text.contains("fits one batch of 16"), "{text}");
    let (ok, text) = run(&[
        "overfit-batch",
        "--batch-size",
        "16",
        "--lr",
        "1e-8",
        "--steps",
        "10",
    ]);
    assert!(!ok && text.contains("cannot fit one batch"), "{text}");
    let plot = data.path().join("curve.png");
    let (ok, text) = run(&[
        "lr-find",
        "--batch-size",
        "16",
        "--steps",
        "30",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(ok && text.contains("lr-find:"), "{text}");
    assert!(plot.is_file());
    let out = kiln()
        .args([
            "lr-find",
            "--json",
            "--batch-size",
            "16",
            "--steps",
            "20",
            "--plot",
        ])
        .arg(&plot)
        .arg("--data")
        .arg(data.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
    assert_eq!(
        v["result"]["lrs"].as_array().map(Vec::len),
        v["result"]["losses"].as_array().map(Vec::len),
        "{v}"
    );
    assert!(v["plot"].as_str().unwrap().ends_with("curve.png"));
}

#[test]
fn a_run_file_trains_resolves_paths_from_its_folder_and_is_saved_to_repeat_the_run() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("data")).unwrap();
    common::write_tiny_fashion_mnist(&root.path().join("data"), 128, 32).unwrap();
    std::fs::create_dir_all(root.path().join("configs")).unwrap();
    let config = root.path().join("configs/run.toml");
    std::fs::write(
        &config,
        r#"
[data]
path = "../data"

[transforms]
train = [{ op = "horizontal-flip", p = 0.5 }]

[model]
name = "mlp"
widths = [32]

[train]
epochs = 1
batch_size = 32
"#,
    )
    .unwrap();
    let out_dir = root.path().join("runs/a");
    // Run from another directory: the data path is relative to the config file, not the cwd.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = kiln()
        .current_dir(elsewhere.path())
        .args(["train", "--no-progress", "--set", "train.lr=0.02", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stdout = succeeded(&out);
    assert!(
        stdout.contains("Mlp(784 -> [32] -> 10)") && stdout.contains("lr=0.02"),
        "{stdout}"
    );
    assert!(stdout.contains("horizontal-flip"), "{stdout}");
    // The saved run file repeats the run.
    let saved = out_dir.join("config.toml");
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(
        text.contains("lr = 0.02") && text.contains("name = \"mlp\""),
        "{text}"
    );
    let again = train_config(&saved, root.path().join("runs/b"));
    succeeded(&again);
    let acc = |dir: &str| {
        let s = std::fs::read_to_string(root.path().join(dir).join("summary.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&s).unwrap()["test_acc"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(acc("runs/a"), acc("runs/b"), "the saved config repeats the run");
}

#[test]
fn config_errors_exit_with_2_and_name_file_line_and_the_closest_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");
    std::fs::write(&config, "[train]\nepochs = 2\nbatch_sise = 32\n").unwrap();
    let out = kiln().args(["train", "--config"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3:1: unknown field `batch_sise`", config.display()))
            && stderr.contains("did you mean `batch_size`?"),
        "{stderr}"
    );
    // A training flag next to --config is ambiguous: refused, pointing at --set.
    std::fs::write(&config, "[train]\nepochs = 2\n").unwrap();
    let out = kiln()
        .args(["train", "--lr", "0.1", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--lr cannot be combined with --config") && stderr.contains("--set train.lr"),
        "{stderr}"
    );
    // Invalid values and unknown flags are usage errors too; a missing dataset is a run-time one.
    for (args, code) in [
        (vec!["train", "--epochs", "0"], 2),
        (vec!["train", "--set", "train.lr=-1"], 2),
        (vec!["train", "--no-such-flag"], 2),
        (vec!["train", "--data", "/no/such/dir"], 1),
    ] {
        let out = kiln().args(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn eval_predict_transform_stats_and_inspect_work_on_a_trained_run() {
    let data = tempfile::tempdir().unwrap();
    common::write_tiny_fashion_mnist(data.path(), 128, 32).unwrap();
    let run = data.path().join("run");
    let out = train_tiny(data.path(), &run, "1");
    succeeded(&out);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let out = kiln().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let run_s = run.to_str().unwrap();

    // eval reproduces the run's own test figures.
    let csv = run.with_file_name("confusion-of-eval.csv");
    let e = json(&[
        "eval",
        "--run",
        run_s,
        "--json",
        "--confusion",
        csv.to_str().unwrap(),
    ]);
    // Every non-zero cell in the CSV too: true,predicted,count summing to the samples.
    let cells = std::fs::read_to_string(&csv).unwrap();
    assert!(cells.starts_with("true,predicted,count\n"), "{cells}");
    let counted: u64 = cells
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, 32);
    assert_eq!(e["accuracy"], summary["test_acc"]);
    assert_eq!(e["samples"], 32);
    assert_eq!(e["per_class"].as_array().unwrap().len(), 10);
    // The matrix as its non-zero cells, [true, predicted, count]: it scales to any class count.
    assert_eq!(e["confusion"]["classes"], 10);
    let confusion_total: u64 = e["confusion"]["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[2].as_u64().unwrap())
        .sum();
    assert_eq!(confusion_total, 32);

    // Test image 0 as a PNG: predict on it, and on the tensor `transform` writes for it.
    let ds = kiln_data::MnistDataset::from_dir(data.path(), kiln_data::MnistSplit::Test).unwrap();
    let item = burn::data::dataset::Dataset::get(&ds, 0).unwrap();
    let png = data.path().join("img.png");
    image::GrayImage::from_raw(28, 28, item.image.as_slice().to_vec())
        .unwrap()
        .save(&png)
        .unwrap();
    let weights = run.join("model.bpk");
    let w = weights.to_str().unwrap();
    let p = json(&[
        "predict",
        "--weights",
        w,
        "--input",
        png.to_str().unwrap(),
        "--top-k",
        "10",
        "--json",
    ]);
    let top = &p[0]["top_k"];
    assert_eq!(top.as_array().unwrap().len(), 10);
    let total: f64 = top
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["probability"].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-4, "probabilities sum to {total}");
    let npy = data.path().join("x.npy");
    let out = kiln()
        .args([
            "transform",
            "--config",
            run.join("config.toml").to_str().unwrap(),
            "--input",
        ])
        .arg(&png)
        .arg("--out")
        .arg(&npy)
        .output()
        .unwrap();
    succeeded(&out);
    let x = kiln_data::npy::read(&npy).unwrap();
    assert_eq!(x.shape, vec![1, 28, 28]);
    // (v / 255 - mean) / std, torchvision's ToTensor + Normalize on the Fashion-MNIST preset.
    let norm = kiln_transforms::Normalization::fashion_mnist();
    let expected = (f32::from(item.image.as_slice()[400]) / 255.0 - norm.mean[0]) / norm.std[0];
    assert!((x.data[400] - expected).abs() < 1e-6);
    // --json: the same file, and its statistics computed here from what was written.
    let t = json(&[
        "transform",
        "--json",
        "--config",
        run.join("config.toml").to_str().unwrap(),
        "--input",
        png.to_str().unwrap(),
        "--out",
        npy.to_str().unwrap(),
    ]);
    assert_eq!(t["shape_chw"], serde_json::json!([1, 28, 28]));
    let mean = x.data.iter().map(|&v| f64::from(v)).sum::<f64>() / x.data.len() as f64;
    assert!((t["channel_mean"][0].as_f64().unwrap() - mean).abs() < 1e-9);
    let q = json(&[
        "predict",
        "--weights",
        w,
        "--input",
        npy.to_str().unwrap(),
        "--top-k",
        "10",
        "--json",
    ]);
    assert_eq!(
        q[0]["top_k"][0], p[0]["top_k"][0],
        "the .npy path gives the image path's answer"
    );

    // Weights without a config beside them, and no --config: a usage error that says what to pass.
    let lone = data.path().join("lone.bpk");
    std::fs::copy(&weights, &lone).unwrap();
    let out = kiln()
        .args(["predict", "--weights", lone.to_str().unwrap(), "--input"])
        .arg(&png)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lone.bpk.kiln.json next to the weights"));

    // stats on the training split; inspect a sample and the first batch.
    let s = json(&["stats", "--data", data.path().to_str().unwrap(), "--json"]);
    assert_eq!(s["images"], 128);
    assert!(s["mean"][0].as_f64().unwrap() > 0.0 && s["std"][0].as_f64().unwrap() > 0.0);
    let grid = data.path().join("grid.png");
    let i = json(&[
        "inspect",
        "--data",
        data.path().to_str().unwrap(),
        "--index",
        "5",
        "--json",
        "--grid",
        grid.to_str().unwrap(),
    ]);
    assert_eq!(i["sample"]["index"], 5);
    assert_eq!(i["sample"]["raw_shape_hwc"], serde_json::json!([28, 28, 1]));
    // 128 images minus the 10% validation split: one batch of all 115 training images.
    assert_eq!(i["first_batch"]["shape"], serde_json::json!([115, 1, 28, 28]));
    assert_eq!(
        i["first_batch"]["label_histogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        115
    );
    assert!(grid.is_file());
}

#[test]
fn ablate_runs_matched_variants_and_writes_a_table_csv_and_png() {
    let data = tempfile::tempdir().unwrap();
    common::write_tiny_fashion_mnist(data.path(), 128, 16).unwrap();
    let out_dir = data.path().join("abl");
    let out = kiln()
        .args([
            "ablate",
            "--study",
            "bn",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--json",
            "--data",
        ])
        .arg(data.path())
        .arg("--out-dir")
        .arg(&out_dir)
        .output()
        .unwrap();
    succeeded(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0]["variant"].as_str(), rows[1]["variant"].as_str()),
        (Some("batch-norm"), Some("no batch-norm"))
    );
    // Matched runs: the two variants differ, so their losses do too.
    assert_ne!(rows[0]["first_train_loss"], rows[1]["first_train_loss"]);
    let csv = std::fs::read_to_string(out_dir.join("ablation-bn.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(out_dir.join("ablation-bn.png").is_file());
    // Colour on grey data is refused with the reason (usage error).
    let out = kiln()
        .args(["ablate", "--study", "colour", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a colour dataset"));
}

#[test]
fn a_label_out_of_range_in_the_files_is_a_run_time_error_naming_file_and_index() {
    let data = tempfile::tempdir().unwrap();
    common::write_tiny_fashion_mnist(data.path(), 64, 16).unwrap();
    let labels = data.path().join("train-labels-idx1-ubyte");
    let mut bytes = std::fs::read(&labels).unwrap();
    let at = bytes.len() - 64 + 7; // the 8th label (idx1 header: 8 bytes)
    bytes[at] = 12;
    std::fs::write(&labels, bytes).unwrap();
    for cmd in ["train", "doctor", "inspect"] {
        let out = kiln().args([cmd, "--data"]).arg(data.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {stderr}");
        assert!(
            stderr.contains("label 12 at index 7") && stderr.contains("train-labels-idx1-ubyte"),
            "{cmd}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{cmd}: {stderr}");
    }
}

#[test]
fn a_run_killed_with_sigkill_resumes_to_the_metrics_of_an_uninterrupted_one() {
    let data = tempfile::tempdir().unwrap();
    common::write_tiny_fashion_mnist(data.path(), 256, 32).unwrap();
    let args = |out: &std::path::Path| {
        let mut c = kiln();
        c.args([
            "train",
            "--epochs",
            "12",
            "--batch-size",
            "32",
            "--no-progress",
            "--data",
        ])
        .arg(data.path())
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        c
    };
    let killed = data.path().join("killed");
    let mut child = args(&killed).spawn().unwrap();
    // SIGKILL as soon as the second checkpoint is complete: no chance to clean up.
    let second = killed.join("checkpoints/epoch-0002/state.json");
    let start = std::time::Instant::now();
    while !second.is_file() {
        assert!(
            start.elapsed().as_secs() < 120,
            "no second checkpoint after 2 minutes"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    // What a SIGKILL *during* a checkpoint write leaves (the instant cannot be timed from here,
    // so it is laid out by hand, whatever the kill above interrupted): the next epoch's temporary
    // folder with half a model file and no state.json, and half of a best-model temporary.
    let ckpts = killed.join("checkpoints");
    let model = std::fs::read(ckpts.join("epoch-0002/model.bpk")).unwrap();
    let partial = ckpts.join(".epoch-0003.tmp");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("model.bpk"), &model[..model.len() / 2]).unwrap();
    std::fs::write(ckpts.join(".best.bpk.4242.tmp"), &model[..model.len() / 3]).unwrap();
    let resumed = kiln()
        .args(["train", "--no-progress", "--resume"])
        .arg(&killed)
        .output()
        .unwrap();
    succeeded(&resumed);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(
        stderr.contains(".epoch-0003.tmp, left by a write that was interrupted")
            && stderr.contains(".best.bpk.4242.tmp"),
        "{stderr}"
    );
    let straight = data.path().join("straight");
    assert!(args(&straight).status().unwrap().success());
    let metrics = |dir: &std::path::Path| -> Vec<(f64, f64, f64)> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let f = |k: &str| v[k].as_f64().unwrap();
                (f("train_loss"), f("val_loss"), f("val_acc"))
            })
            .collect()
    };
    let (a, b) = (metrics(&killed), metrics(&straight));
    assert_eq!(a.len(), 12);
    assert_eq!(a, b, "killed + resumed vs uninterrupted");
    // The resume read the last complete checkpoint, not the half-written one, and left only
    // complete checkpoints behind.
    for entry in std::fs::read_dir(killed.join("checkpoints")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.ends_with(".tmp"), "leftover {name}");
    }
}

/// CIFAR-10's binary layout with `per_file` records per batch file: label byte, then 1024 R,
/// 1024 G, 1024 B bytes. Class k's images are dominated by one colour channel (k % 3), so colour
/// order matters and a model can learn them.
fn write_tiny_cifar10(dir: &std::path::Path, per_file: usize) {
    let record = |i: usize| -> Vec<u8> {
        let label = (i % 10) as u8;
        let mut r = vec![label];
        for channel in 0..3 {
            let level = if channel == usize::from(label) % 3 {
                200
            } else {
                40
            };
            r.extend((0..1024).map(|p| (level + (p * 7 + i * 13) % 50) as u8));
        }
        r
    };
    for name in [
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ] {
        let bytes: Vec<u8> = (0..per_file).flat_map(record).collect();
        std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
    }
}

#[test]
fn cifar10_binary_trains_a_colour_model_from_a_run_file_and_predicts_a_png() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&data).unwrap();
    write_tiny_cifar10(&data, 20);
    let config = root.path().join("cifar.toml");
    for (model, name) in [
        ("name = \"reference-cnn\"", "ReferenceCnn(3x32x32 -> 10 classes)"),
        (
            "name = \"resnet\"\ndepth = \"cifar-resnet20\"",
            "CIFAR ResNet-20(3x32x32 -> 10 classes)",
        ),
    ] {
        std::fs::write(
            &config,
            format!(
                "[data]\nformat = \"cifar10\"\npath = \"cifar-10-batches-bin\"\n\n[model]\n{model}\n\n[train]\nepochs = 1\nbatch_size = 30\n"
            ),
        )
        .unwrap();
        let run = root.path().join(format!("run-{}", name.len()));
        let out = train_config(&config, &run);
        let stdout = succeeded(&out);
        assert!(
            stdout.contains(name) && stdout.contains("(90 train / 10 val / 20 test)"),
            "{stdout}"
        );
        assert!(stdout.contains("norm:  cifar10"), "{stdout}");
        let spec = kiln_models::PretrainedSpec::load_next_to(&run.join("model.bpk")).unwrap();
        assert_eq!(
            (spec.input_chw, spec.class_names[0].as_str()),
            ([3, 32, 32], "airplane")
        );
        let e = kiln()
            .args(["eval", "--json", "--run"])
            .arg(&run)
            .output()
            .unwrap();
        let e: serde_json::Value = serde_json::from_str(&succeeded(&e)).unwrap();
        assert_eq!(e["samples"], 20);
    }
    // A colour PNG through predict: decoded BGR, converted to the model's RGB, normalised.
    let png = root.path().join("red.png");
    image::RgbImage::from_pixel(40, 40, image::Rgb([200, 40, 40]))
        .save(&png)
        .unwrap();
    let run = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("model.bpk").is_file())
        .unwrap();
    let out = kiln()
        .args(["predict", "--json", "--input"])
        .arg(&png)
        .arg("--weights")
        .arg(run.join("model.bpk"))
        .output()
        .unwrap();
    let p: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
    assert_eq!(p[0]["top_k"].as_array().unwrap().len(), 3);
    // Stats in the model's (RGB) order.
    let out = kiln()
        .args(["stats", "--format", "cifar10", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let s: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
    assert_eq!(s["images"], 100);
    assert_eq!(s["mean"].as_array().unwrap().len(), 3);
}

#[test]
fn an_image_folder_of_mixed_sizes_trains_with_eval_transforms_and_refuses_without_them() {
    let root = tempfile::tempdir().unwrap();
    let colours = [
        ("blue", [20u8, 20, 220]),
        ("green", [20, 220, 20]),
        ("red", [220, 20, 20]),
    ];
    for (split, n) in [("train", 12), ("val", 4)] {
        for (class, rgb) in colours {
            let dir = root.path().join("folder").join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                // Sizes differ within a class: the eval stages must bring them to one size.
                let (w, h) = (18 + i * 3, 20 + i);
                image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb(rgb))
                    .save(dir.join(format!("{i}.png")))
                    .unwrap();
            }
        }
    }
    let config = root.path().join("folder.toml");
    let base = "[data]\nformat = \"image-folder\"\npath = \"folder\"\nval_fraction = 0.25\n\n[train]\nepochs = 1\nbatch_size = 9\n";
    std::fs::write(&config, base).unwrap();
    // Without eval stages, the model's input size (the reference CNN's 28x28) is the default,
    // reached as torchvision evaluates: shorter side to 32, centre crop; said on stderr.
    let out = kiln()
        .args(["inspect", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
    assert_eq!(
        report["first_batch"]["shape"],
        serde_json::json!([9, 3, 28, 28]),
        "{stderr}"
    );
    assert!(
        stderr.contains("shorter side resized to 32, centre crop 28x28"),
        "{stderr}"
    );
    // Stages that do not end in a fixed size are refused, before anything is written.
    std::fs::write(
        &config,
        format!("{base}\n[transforms]\neval = [{{ op = \"resize-shorter\", size = 20 }}]\n"),
    )
    .unwrap();
    let out = kiln().args(["train", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("end in a fixed size"));

    std::fs::write(
        &config,
        format!(
            "{base}\n[transforms]\neval = [{{ op = \"resize\", height = 16, width = 16 }}]\ntrain = [{{ op = \"random-resized-crop\", height = 16, width = 16 }}, {{ op = \"horizontal-flip\", p = 0.5 }}]\n"
        ),
    )
    .unwrap();
    let run = root.path().join("run");
    let out = train_config(&config, &run);
    let stdout = succeeded(&out);
    assert!(
        stdout.contains("ReferenceCnn(3x16x16 -> 3 classes)")
            && stdout.contains("(27 train / 9 val / 12 test)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("torch-imagenet"),
        "ImageFolder defaults to ImageNet statistics: {stdout}"
    );
    let spec = kiln_models::PretrainedSpec::load_next_to(&run.join("model.bpk")).unwrap();
    assert_eq!(spec.class_names, vec!["blue", "green", "red"]);
    let e = kiln()
        .args(["eval", "--json", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    let e: serde_json::Value = serde_json::from_str(&succeeded(&e)).unwrap();
    assert_eq!(e["samples"], 12);
    let img = root.path().join("folder/val/red/0.png");
    let p = kiln()
        .args(["predict", "--json", "--top-k", "3", "--weights"])
        .arg(run.join("model.bpk"))
        .arg("--input")
        .arg(&img)
        .output()
        .unwrap();
    let p: serde_json::Value = serde_json::from_str(&succeeded(&p)).unwrap();
    let names: Vec<&str> = p[0]["top_k"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["class"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3);
    assert!(names.contains(&"red") && names.contains(&"blue"), "{names:?}");
}

#[test]
fn a_corrupt_image_stops_the_run_or_is_skipped_and_reported_under_the_skip_policy() {
    let root = tempfile::tempdir().unwrap();
    colour_folder(
        &root.path().join("folder"),
        &[("a", [200, 10, 10]), ("b", [10, 10, 200])],
        8,
        2,
    );
    // A file with a PNG name and garbage inside, as a half-downloaded image would be.
    std::fs::write(
        root.path().join("folder/train/a/broken.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    let config = root.path().join("run.toml");
    let write = |policy: &str| {
        std::fs::write(
            &config,
            format!(
                "[data]\nformat = \"image-folder\"\npath = \"folder\"\nval_fraction = 0.25\n{policy}\n[transforms]\neval = [{{ op = \"resize\", height = 8, width = 8 }}]\n\n[train]\nepochs = 2\nbatch_size = 4\n"
            ),
        )
        .unwrap();
    };
    write("");
    let out = train_config(&config, root.path().join("r1"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // One line, the file named once (each layer adds its context once).
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert_eq!(line.matches("broken.png").count(), 1, "{stderr}");

    write("on_bad_sample = \"skip\"\nmax_bad_fraction = 0.2");
    let run = root.path().join("r2");
    let out = train_config(&config, &run);
    let stdout = succeeded(&out);
    assert!(stdout.contains("skipped 1 bad"), "{stdout}");
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(report.contains("broken.png"), "{report}");
}

/// A full disk, for real: the run is started under `ulimit -f 1024` (files over 1 MiB fail with
/// EFBIG, "File too large", as writes on a full disk fail with ENOSPC; SIGXFSZ ignored, as a
/// shell does for its children) so the 1.7 MB checkpoint of the reference CNN cannot be written.
/// Default policy: the run stops at once with the file named, exit code 1, no panic and no
/// temporary file left. `--on-checkpoint-error continue`: every epoch still trains, each failed
/// checkpoint is a warning, and the final weights that cannot be saved end the run with an error.
/// (That the last good checkpoint stays whole and resumes is `tests/train_loop.rs`'s
/// `a_checkpoint_that_cannot_be_written_stops_or_continues_by_policy`.)
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_during_checkpointing_stops_the_run_with_the_file_named() {
    let data = tempfile::tempdir().unwrap();
    common::write_tiny_fashion_mnist(data.path(), 64, 16).unwrap();
    let runs = tempfile::tempdir().unwrap();
    for policy in ["stop", "continue"] {
        let out_dir = runs.path().join(policy);
        let out = Command::new("bash")
            .arg("-c")
            .arg("trap '' XFSZ; ulimit -f 1024; exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_kiln"))
            .args(["train", "--epochs", "2", "--batch-size", "16", "--no-progress"])
            .args(["--on-checkpoint-error", policy, "--data"])
            .arg(data.path())
            .arg("--out")
            .arg(&out_dir)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{policy}: {stdout}\n{stderr}");
        assert!(stderr.contains("File too large"), "{policy}: {stderr}");
        assert!(!stderr.contains("panicked"), "{policy}: {stderr}");
        if policy == "stop" {
            assert!(
                stderr.contains("epoch 1's checkpoint could not be written")
                    && stderr.contains("checkpoints/best.bpk")
                    && stderr.contains("last good checkpoint: none"),
                "{stderr}"
            );
            assert!(!stdout.contains("epoch 2/2"), "{stdout}");
        } else {
            assert!(stdout.contains("epoch 2/2"), "trained on: {stdout}");
            assert_eq!(stderr.matches("training goes on").count(), 2, "{stderr}");
            assert!(stderr.contains("model.bpk"), "{stderr}");
        }
        // Nothing half-written is left where a resume would look.
        let leftovers: Vec<_> = std::fs::read_dir(out_dir.join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(leftovers.is_empty(), "{policy}: {leftovers:?}");
    }
}

/// Runs `args` of `kiln` the way an ordinary user would meet an unreadable file: root reads
/// mode-000 files anyway (CAP_DAC_OVERRIDE), so as root the command runs under `setpriv` with
/// those capabilities dropped. `None` as root without `setpriv`.
#[cfg(target_os = "linux")]
fn kiln_without_read_override() -> Option<Command> {
    use std::os::unix::fs::MetadataExt;
    let probe = tempfile::NamedTempFile::new().unwrap();
    if probe.as_file().metadata().unwrap().uid() != 0 {
        return Some(kiln());
    }
    let mut c = Command::new("setpriv");
    c.args(["--bounding-set", "-dac_override,-dac_read_search", "--"])
        .arg(env!("CARGO_BIN_EXE_kiln"));
    c.arg("--version").output().ok().filter(|o| o.status.success())?;
    let mut c = Command::new("setpriv");
    c.args(["--bounding-set", "-dac_override,-dac_read_search", "--"])
        .arg(env!("CARGO_BIN_EXE_kiln"));
    Some(c)
}

/// Waits at most `secs` for `cmd`: a hang is a test failure, not a stuck CI job.
#[cfg(target_os = "linux")]
fn output_within(mut cmd: Command, secs: u64) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed().as_secs() > secs {
            child.kill().unwrap();
            panic!("still running after {secs} s: {cmd:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Unreadable and special files: a mode-000 image and a FIFO named `pipe.png` in an ImageFolder,
/// a mode-000 idx file, and both given to `predict`. Opening a FIFO waits for a writer forever,
/// so kiln checks the file type first: the scan skips it with a warning and `predict` refuses it,
/// within seconds. The unreadable image stops the run naming it ("Permission denied") or, under
/// `on_bad_sample = "skip"`, is left out and listed.
#[cfg(target_os = "linux")]
#[test]
fn unreadable_files_and_fifos_are_errors_or_skips_naming_them_never_hangs() {
    use std::os::unix::fs::PermissionsExt;
    let Some(_) = kiln_without_read_override() else {
        eprintln!("skipped: running as root without setpriv, mode-000 files stay readable");
        return;
    };
    let unprivileged = || kiln_without_read_override().unwrap();
    let root = tempfile::tempdir().unwrap();
    colour_folder(
        &root.path().join("folder"),
        &[("a", [200, 10, 10]), ("b", [10, 10, 200])],
        8,
        2,
    );
    let locked = root.path().join("folder/train/a/locked.png");
    image::RgbImage::from_pixel(10, 10, image::Rgb([200, 10, 10]))
        .save(&locked)
        .unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let fifo = root.path().join("folder/train/b/pipe.png");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());

    let config = root.path().join("run.toml");
    let write = |policy: &str| {
        std::fs::write(
            &config,
            format!(
                "[data]\nformat = \"image-folder\"\npath = \"folder\"\nval_fraction = 0.25\n{policy}\n[transforms]\neval = [{{ op = \"resize\", height = 8, width = 8 }}]\n\n[train]\nepochs = 1\nbatch_size = 4\n"
            ),
        )
        .unwrap();
    };
    write("");
    let mut cmd = unprivileged();
    cmd.args(["train", "--no-progress", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(root.path().join("r1"));
    let out = output_within(cmd, 120);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("locked.png") && stderr.contains("Permission denied"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pipe.png: a FIFO") && stderr.contains("skipped"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    write("on_bad_sample = \"skip\"\nmax_bad_fraction = 0.2");
    let run = root.path().join("r2");
    let mut cmd = unprivileged();
    cmd.args(["train", "--no-progress", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&run);
    let out = output_within(cmd, 120);
    let stdout = succeeded(&out);
    assert!(stdout.contains("skipped 1 bad"), "{stdout}");
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        report.contains("locked.png") && report.contains("Permission denied"),
        "{report}"
    );

    for (input, expected) in [(&fifo, "FIFO"), (&locked, "Permission denied")] {
        let mut cmd = unprivileged();
        cmd.args(["predict", "--weights"])
            .arg(run.join("model.bpk"))
            .arg("--input")
            .arg(input);
        let out = output_within(cmd, 60);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&input.display().to_string()) && stderr.contains(expected),
            "{stderr}"
        );
    }

    // An unreadable idx file.
    let data = root.path().join("fmnist");
    std::fs::create_dir(&data).unwrap();
    common::write_tiny_fashion_mnist(&data, 32, 16).unwrap();
    let images = data.join("train-images-idx3-ubyte");
    std::fs::set_permissions(&images, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = unprivileged();
    cmd.args(["train", "--no-progress", "--data"]).arg(&data);
    let out = output_within(cmd, 60);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("train-images-idx3-ubyte") && stderr.contains("Permission denied"),
        "{stderr}"
    );
}

/// An ImageFolder (`train/` and `val/`) of flat-colour 12×12 PNGs, one class per colour.
fn colour_folder(root: &std::path::Path, classes: &[(&str, [u8; 3])], train: usize, val: usize) {
    for (split, n) in [("train", train), ("val", val)] {
        for (class, rgb) in classes {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let shade = |c: u8| c.saturating_sub((i * 5) as u8);
                image::RgbImage::from_pixel(12, 12, image::Rgb(rgb.map(shade)))
                    .save(dir.join(format!("{i}.png")))
                    .unwrap();
            }
        }
    }
}

/// Fine-tuning from the command line: weights trained on 5 classes start a run on 3; the head is
/// replaced (said on stderr), `[finetune] freeze_backbone` trains only the head, and the result's
/// spec names the 3 new classes. `[finetune]` without weights, or a backbone factor of 0, is a
/// config error (exit 2).
#[test]
fn fine_tuning_replaces_the_head_for_new_classes_and_can_freeze_the_backbone() {
    let root = tempfile::tempdir().unwrap();
    colour_folder(
        &root.path().join("five"),
        &[
            ("a", [220, 20, 20]),
            ("b", [20, 220, 20]),
            ("c", [20, 20, 220]),
            ("d", [220, 220, 20]),
            ("e", [20, 220, 220]),
        ],
        6,
        2,
    );
    colour_folder(
        &root.path().join("three"),
        &[
            ("cat", [200, 100, 50]),
            ("dog", [50, 100, 200]),
            ("owl", [100, 200, 50]),
        ],
        8,
        2,
    );
    let common = "[transforms]\neval = [{ op = \"resize\", height = 8, width = 8 }]\n\n[train]\nepochs = 1\nbatch_size = 4\n";
    let pre = root.path().join("pre.toml");
    std::fs::write(
        &pre,
        format!("[data]\nformat = \"image-folder\"\npath = \"five\"\nval_fraction = 0.2\n\n{common}"),
    )
    .unwrap();
    succeeded(&train_config(&pre, root.path().join("pre")));
    let tune = root.path().join("tune.toml");
    let write_tune = |extra: &str| {
        std::fs::write(
            &tune,
            format!("[data]\nformat = \"image-folder\"\npath = \"three\"\nval_fraction = 0.25\n\n{common}\n{extra}"),
        )
        .unwrap();
    };
    write_tune("[run]\ninit_from = \"pre/model.bpk\"\n\n[finetune]\nfreeze_backbone = true\n");
    let out = train_config(&tune, root.path().join("tuned"));
    let stdout = succeeded(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("was trained for 5 classes, the data has 3: the classifier head is replaced"),
        "{stderr}"
    );
    assert!(
        stdout.contains("backbone frozen: only the head trains"),
        "{stdout}"
    );
    let spec = kiln_models::PretrainedSpec::load_next_to(&root.path().join("tuned/model.bpk")).unwrap();
    assert_eq!(spec.class_names, vec!["cat", "dog", "owl"]);

    for (extra, expected) in [
        (
            "[finetune]\nfreeze_backbone = true\n",
            "[finetune] settings need weights to start from",
        ),
        (
            "[run]\ninit_from = \"pre/model.bpk\"\n\n[finetune]\nbackbone_lr_factor = 0.0\n",
            "finetune.backbone_lr_factor = 0: must be a positive number",
        ),
        (
            "[run]\ninit_from = \"pre/model.bpk\"\n\n[finetune]\nlayer_decay = 1.5\n",
            "finetune.layer_decay = 1.5: must be in (0, 1]",
        ),
        (
            "[run]\ninit_from = \"pre/model.bpk\"\n\n[finetune]\nlayer_decay = 0.5\nbackbone_lr_factor = 0.1\n",
            "leave finetune.backbone_lr_factor at 1",
        ),
        (
            "[run]\ninit_from = \"pre/model.bpk\"\n\n[finetune]\nlayer_decay = 0.5\n",
            "ReferenceCnn has no layer order for layer-wise decay",
        ),
    ] {
        write_tune(extra);
        let out = train_config(&tune, root.path().join("never"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!root.path().join("never").exists());
    }

    // Layer-wise decay on a (tiny) ViT: embedding, one block, head — the embedding at 0.5².
    let vit = "[model]\nname = \"vit\"\nvariant = \"tiny\"\npatch_size = 4\nnum_layers = 1\nnum_heads = 2\nhidden_dim = 8\nmlp_dim = 8\n";
    std::fs::write(
        &pre,
        format!("[data]\nformat = \"image-folder\"\npath = \"five\"\nval_fraction = 0.2\n\n{vit}\n{common}"),
    )
    .unwrap();
    succeeded(&train_config(&pre, root.path().join("pre-vit")));
    write_tune(&format!(
        "{vit}\n[run]\ninit_from = \"pre-vit/model.bpk\"\n\n[finetune]\nlayer_decay = 0.5\n"
    ));
    let stdout = succeeded(&train_config(&tune, root.path().join("tuned-vit")));
    assert!(
        stdout.contains("layer-wise learning-rate decay 0.5 over 3 layers: the stem at 2.500e-1×"),
        "{stdout}"
    );
}

/// `--json` keeps stdout for one JSON object (the human lines go to stderr): train's summary,
/// epochs and files; doctor's and overfit-batch's reports.
#[test]
fn json_makes_stdout_one_object_for_train_doctor_and_overfit_batch() {
    let data = tempfile::tempdir().unwrap();
    common::write_tiny_fashion_mnist(data.path(), 128, 32).unwrap();
    let run = data.path().join("run");
    let out = kiln()
        .args([
            "train",
            "--json",
            "--no-progress",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--data",
        ])
        .arg(data.path())
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
    assert_eq!(v["epochs"].as_array().unwrap().len(), 2);
    assert_eq!(v["epochs"][1]["epoch"], 2);
    let acc = v["summary"]["test_acc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert_eq!(v["summary"]["test_images"], 32);
    for f in ["model", "spec", "report", "metrics", "config"] {
        let path = v["files"][f].as_str().unwrap();
        assert!(std::path::Path::new(path).is_file(), "{f}: {path}");
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("epoch 2/2"));

    let out = kiln()
        .args(["doctor", "--json", "--batch-size", "32", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
    assert_eq!(v["ok"], true);
    assert!(!v["report"]["checks"].as_array().unwrap().is_empty(), "{v}");

    let out = kiln()
        .args([
            "overfit-batch",
            "--json",
            "--steps",
            "5",
            "--batch-size",
            "32",
            "--data",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(v["passed"].is_boolean(), "{v}");
}

/// `kiln inspect` on colour data: CIFAR-10 binary (stored RGB planes, decoded to HWC BGR as
/// everything else) and an ImageFolder. The raw sample's channel means come in BGR order, the
/// first batch is RGB CHW, and `--grid` writes an RGB PNG in which a red image is red.
#[test]
fn inspect_shows_colour_samples_in_bgr_and_the_batch_grid_in_rgb() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&data).unwrap();
    write_tiny_cifar10(&data, 20);
    let config = root.path().join("cifar.toml");
    std::fs::write(
        &config,
        "[data]\nformat = \"cifar10\"\npath = \"cifar-10-batches-bin\"\n\n[train]\nbatch_size = 16\n",
    )
    .unwrap();
    let grid = root.path().join("grid.png");
    let out = kiln()
        .args(["inspect", "--json", "--index", "0", "--config"])
        .arg(&config)
        .arg("--grid")
        .arg(&grid)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
    let s = &v["sample"];
    assert_eq!(s["raw_shape_hwc"], serde_json::json!([32, 32, 3]));
    assert_eq!(
        (s["colour_order"].as_str(), s["label"].as_u64()),
        (Some("BGR"), Some(0))
    );
    assert_eq!(s["class"], "airplane");
    // Sample 0 is class 0, red-dominated in the file (R plane ≈ 200+, G and B ≈ 40+): in BGR
    // order the last mean is the large one.
    let m: Vec<f64> = serde_json::from_value(s["channel_means"].clone()).unwrap();
    assert!(m[2] > 200.0 && m[0] < 100.0 && m[1] < 100.0, "{m:?}");
    let b = &v["first_batch"];
    assert_eq!(b["shape"], serde_json::json!([16, 3, 32, 32]));
    assert_eq!(b["colour_order"], "Rgb");
    // The grid: 8 columns × 2 rows of 34-pixel cells, RGB; somewhere a red image is red.
    let img = image::open(&grid).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (8 * 34, 2 * 34));
    assert!(img.pixels().any(|p| p[0] > 190 && p[1] < 110 && p[2] < 110));
    assert!(img.pixels().any(|p| p[2] > 190 && p[0] < 110 && p[1] < 110));

    // An ImageFolder: the sample names its file.
    colour_folder(
        &root.path().join("folder"),
        &[("blue", [20, 20, 220]), ("red", [220, 20, 20])],
        4,
        1,
    );
    std::fs::write(
        &config,
        "[data]\nformat = \"image-folder\"\npath = \"folder\"\nval_fraction = 0.25\n\n[transforms]\neval = [{ op = \"resize\", height = 8, width = 8 }]\n\n[train]\nbatch_size = 4\n",
    )
    .unwrap();
    let out = kiln()
        .args(["inspect", "--index", "5", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = succeeded(&out);
    assert!(
        text.contains("red/1.png")
            && text.contains("label 1 (red)")
            && text.contains("[12, 12, 3] HWC BGR u8"),
        "{text}"
    );
}

/// The detection demo (`examples/configs/coco-detection.toml` on the committed COCO-style shapes):
/// `inspect` shows a sample's boxes with contiguous labels and the first padded batch; `train`
/// refuses detection data with the reason (exit 2), and so does a COCO config without annotations.
#[test]
fn inspect_shows_a_coco_sample_and_the_first_padded_detection_batch() {
    let config =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/configs/coco-detection.toml");
    let out = kiln()
        .args(["inspect", "--json", "--index", "2", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
    assert_eq!(v["categories"], serde_json::json!(["person", "car", "dog"]));
    assert_eq!(v["category_ids"], serde_json::json!([1, 3, 18]));
    let s = &v["sample"];
    assert!(s["file"].as_str().unwrap().ends_with("crowd.png"));
    // scripts/make_coco_shapes.py: crowd.png has (1, 0, 0, 60, 72, crowd), (1, 70, 10, 20, 50),
    // (3, 95, 40, 20, 20) as (category, x, y, w, h): xyxy, labels person = 0, car = 1.
    let boxes: Vec<([f32; 4], u32, bool)> = s["boxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                serde_json::from_value(b["xyxy"].clone()).unwrap(),
                b["label"].as_u64().unwrap() as u32,
                b["crowd"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        boxes,
        vec![
            ([0.0, 0.0, 60.0, 72.0], 0, true),
            ([70.0, 10.0, 90.0, 60.0], 0, false),
            ([95.0, 40.0, 115.0, 60.0], 1, false)
        ]
    );
    let b = &v["first_batch"];
    let images: Vec<usize> = serde_json::from_value(b["images"].clone()).unwrap();
    assert_eq!(&images[..2], &[4, 3]);
    assert!(
        images[2].is_multiple_of(32) && images[3].is_multiple_of(32),
        "{images:?}"
    );
    let m = b["boxes"][1].as_u64().unwrap() as usize;
    for (labels, mask) in b["labels"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b["mask"].as_array().unwrap())
    {
        for (l, k) in labels.as_array().unwrap().iter().zip(mask.as_array().unwrap()) {
            assert_eq!(
                l.as_i64().unwrap() >= 0,
                k.as_bool().unwrap(),
                "labels are -1 exactly where the mask is false"
            );
        }
        assert_eq!(labels.as_array().unwrap().len(), m);
    }
    for meta in b["meta"].as_array().unwrap() {
        let r: [usize; 2] = serde_json::from_value(meta["resized_hw"].clone()).unwrap();
        assert_eq!(r[0].min(r[1]), 64, "shorter side 64: {meta}");
    }

    let out = kiln().args(["train", "--config"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is detection data"), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("coco.toml");
    let images = config.parent().unwrap().join("../data/coco-shapes/images");
    std::fs::write(&bare, format!("[data]\nformat = \"coco\"\npath = {:?}\n", images)).unwrap();
    let out = kiln().args(["inspect", "--config"]).arg(&bare).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("needs data.annotations"), "{stderr}");
}

/// `DIR/<class>/*.png` alone: `n` 12x12 images per class, each class one colour.
fn class_folders(root: &std::path::Path, classes: &[(&str, [u8; 3])], n: usize) {
    for (class, rgb) in classes {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            let shade = |c: u8| c.saturating_sub((i * 3) as u8);
            image::RgbImage::from_pixel(12, 12, image::Rgb(rgb.map(shade)))
                .save(dir.join(format!("{i}.png")))
                .unwrap();
        }
    }
}

/// A user's own folder of class folders in one line: the format is detected and said, the
/// train / validation / test splits are drawn per class (10 images each: 1 test, 1 validation,
/// 8 train), the model is named by `--model`, and the weights then work alone: predict and eval
/// without any run file (eval on `--data`), class names from the weights' spec.
#[test]
fn a_folder_of_class_folders_trains_in_one_line_and_its_weights_work_without_a_run_file() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("pets");
    let classes = [
        ("cat", [200, 40, 40]),
        ("dog", [40, 200, 40]),
        ("owl", [40, 40, 200]),
    ];
    class_folders(&data, &classes, 10);
    let run = root.path().join("run");
    let out = kiln()
        .args([
            "train",
            "--model",
            "cifar-resnet20",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--no-progress",
            "--data",
        ])
        .arg(&data)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    let stdout = succeeded(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("found an image folder of class folders")
            && stderr.contains("data.format = image-folder"),
        "{stderr}"
    );
    // CIFAR ResNet-20's input is 32x32: evaluation images resized to 37 (32 / 0.875), cropped.
    assert!(
        stderr.contains("shorter side resized to 37, centre crop 32x32"),
        "{stderr}"
    );
    assert!(
        stdout.contains("CIFAR ResNet-20(3x32x32 -> 3 classes)")
            && stdout.contains("(24 train / 3 val / 3 test)"),
        "{stdout}"
    );
    let spec = kiln_models::PretrainedSpec::load_next_to(&run.join("model.bpk")).unwrap();
    assert_eq!(spec.model, "cifar-resnet20");
    assert_eq!(spec.class_names, vec!["cat", "dog", "owl"]);

    // The weights alone, away from their run folder.
    let alone = root.path().join("alone");
    std::fs::create_dir_all(&alone).unwrap();
    for f in ["model.bpk", "model.bpk.kiln.json"] {
        std::fs::copy(run.join(f), alone.join(f)).unwrap();
    }
    let p = kiln()
        .args(["predict", "--json", "--top-k", "3", "--weights"])
        .arg(alone.join("model.bpk"))
        .arg("--input")
        .arg(data.join("owl/0.png"))
        .output()
        .unwrap();
    let p: serde_json::Value = serde_json::from_str(&succeeded(&p)).unwrap();
    let mut names: Vec<&str> = p[0]["top_k"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["class"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["cat", "dog", "owl"]);
    let e = kiln()
        .args(["eval", "--json", "--weights"])
        .arg(alone.join("model.bpk"))
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    let e: serde_json::Value = serde_json::from_str(&succeeded(&e)).unwrap();
    assert_eq!(e["samples"], 3, "the same seeded test split: one image per class");
    // Without --data and without a run file there is nothing to evaluate on: said so.
    let e = kiln()
        .args(["eval", "--weights"])
        .arg(alone.join("model.bpk"))
        .output()
        .unwrap();
    assert_eq!(e.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&e.stderr).contains("--data DIR"));
}

/// `stats` and `inspect` read every format, detected: here a folder of class folders (the
/// colours' exact means) and the vendored idx files; a requested format that does not match
/// what is there is an error saying both; a folder of nothing known lists what it has.
#[test]
fn stats_and_inspect_detect_the_format_and_a_mismatch_says_both() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("colours");
    class_folders(&data, &[("red", [210, 0, 0]), ("blue", [0, 0, 90])], 1);
    let s = kiln()
        .args(["stats", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let s: serde_json::Value = serde_json::from_str(&succeeded(&s)).unwrap();
    assert_eq!(s["images"], 2);
    // RGB order, unit scale: red (210 + 0) / 2 / 255, green 0, blue (0 + 90) / 2 / 255.
    let mean: Vec<f64> = s["mean"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (m, want) in mean.iter().zip([105.0 / 255.0, 0.0, 45.0 / 255.0]) {
        assert!((m - want).abs() < 1e-9, "{mean:?}");
    }
    let i = kiln()
        .args(["inspect", "--json", "--index", "1", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let i: serde_json::Value = serde_json::from_str(&succeeded(&i)).unwrap();
    assert_eq!(i["sample"]["class"], "red");
    assert_eq!(i["sample"]["colour_order"], "BGR");

    let out = kiln()
        .args(["stats", "--format", "cifar10", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("holds an image folder of class folders") && stderr.contains("not cifar10"),
        "{stderr}"
    );

    let odd = root.path().join("odd");
    std::fs::create_dir_all(odd.join("notes")).unwrap();
    std::fs::write(odd.join("readme.txt"), "hello").unwrap();
    let out = kiln().args(["inspect", "--data"]).arg(&odd).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no dataset format recognised") && stderr.contains("readme.txt"),
        "{stderr}"
    );

    let models = kiln().args(["models"]).output().unwrap();
    let models = succeeded(&models);
    for name in ["reference-cnn", "mlp", "resnet18", "cifar-resnet20"] {
        assert!(models.contains(name), "{models}");
    }
    let out = kiln().args(["train", "--model", "resnet19"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resnet18"));
}

/// `kiln import`: torchvision weights (the CIFAR ResNet-20 fixture PyTorch made, see
/// crates/kiln-models/tests/torchvision_import.rs) become a kiln checkpoint that `predict` uses
/// with no run file; its probabilities are PyTorch's softmax of the fixture's logits, and
/// without class names the classes are shown as indices.
#[test]
fn import_turns_torchvision_weights_into_a_checkpoint_predict_uses_directly() {
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-models/tests/fixtures/cifar_resnet20");
    let root = tempfile::tempdir().unwrap();
    let out_dir = root.path().join("imported");
    let out = kiln()
        .args([
            "import",
            "--arch",
            "cifar-resnet20",
            "--classes",
            "10",
            "--normalization",
            "cifar10",
            "--input-size",
            "32x32",
            "--weights",
        ])
        .arg(fixtures.join("weights.safetensors"))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    succeeded(&out);
    let spec = kiln_models::PretrainedSpec::load_next_to(&out_dir.join("model.bpk")).unwrap();
    assert_eq!(
        (spec.model.as_str(), spec.num_classes, spec.input_chw),
        ("cifar-resnet20", 10, [3, 32, 32])
    );

    // The fixture's input (2x3x32x32 f32, little-endian) as a .npy, model-ready.
    let bytes = std::fs::read(fixtures.join("input.f32")).unwrap();
    let input: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let npy = root.path().join("input.npy");
    kiln_data::npy::write_f32(&npy, &[2, 3, 32, 32], &input).unwrap();
    let probs_path = root.path().join("probs.npy");
    let p = kiln()
        .args(["predict", "--json", "--weights"])
        .arg(out_dir.join("model.bpk"))
        .arg("--input")
        .arg(&npy)
        .arg("--out")
        .arg(&probs_path)
        .output()
        .unwrap();
    let p: serde_json::Value = serde_json::from_str(&succeeded(&p)).unwrap();
    let top = &p[0]["top_k"][0];
    assert_eq!(
        top["class"].as_str().unwrap(),
        top["index"].to_string(),
        "no names: the index"
    );
    let probs = kiln_data::npy::read(&probs_path).unwrap();
    let bytes = std::fs::read(fixtures.join("logits.f32")).unwrap();
    let logits: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    for row in 0..2 {
        // torch.softmax(logits, 1)
        let l = &logits[row * 10..(row + 1) * 10];
        let max = l.iter().copied().fold(f32::MIN, f32::max);
        let sum: f32 = l.iter().map(|v| (v - max).exp()).sum();
        for (j, &logit) in l.iter().enumerate() {
            let want = (logit - max).exp() / sum;
            let got = probs.data[row * 10 + j];
            assert!((got - want).abs() < 1e-5, "row {row} class {j}: {got} vs {want}");
        }
    }
    // A second import into the same folder would overwrite: refused.
    let again = kiln()
        .args([
            "import",
            "--arch",
            "cifar-resnet20",
            "--classes",
            "10",
            "--weights",
        ])
        .arg(fixtures.join("weights.safetensors"))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    // An architecture torchvision does not have.
    let mlp = kiln()
        .args(["import", "--arch", "mlp", "--weights"])
        .arg(fixtures.join("weights.safetensors"))
        .arg("--out")
        .arg(root.path().join("mlp"))
        .output()
        .unwrap();
    assert!(!mlp.status.success());
    assert!(String::from_utf8_lossy(&mlp.stderr).contains("torchvision has no such model"));
}

/// A run whose weights blow up in one step (every step's loss finite) is a failure, not a
/// "healthy" run with NaN figures: exit 1, the message says what diverged, no model is saved;
/// and a rate that overflows in the schedule is refused before training (exit 2).
#[test]
fn a_diverged_run_fails_and_an_overflowing_rate_is_refused() {
    let data = tempfile::tempdir().unwrap();
    common::write_tiny_fashion_mnist(data.path(), 200, 16).unwrap();
    let root = tempfile::tempdir().unwrap();
    // `kiln train` for one epoch on the data into `root/out`, with `flags`: (exit code, stderr).
    let train = |out: &str, flags: &[&str]| {
        let o = kiln()
            .args(["train", "--epochs", "1", "--no-progress"])
            .args(flags)
            .arg("--data")
            .arg(data.path())
            .arg("--out")
            .arg(root.path().join(out))
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    // Issue 27's reproducer: one step of 180 at lr 1e30; the validation split (20) then scores NaN.
    let (code, stderr) = train("run", &["--batch-size", "180", "--lr", "1e30"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the run diverged: the validation loss is NaN after epoch 1")
            && stderr.contains("lower the learning rate"),
        "{stderr}"
    );
    let out_dir = root.path().join("run");
    assert!(!out_dir.join("model.bpk").exists() && !out_dir.join("checkpoints/best.bpk").exists());
    // Without a validation split the weights or the test loss give it away.
    let (code, stderr) = train(
        "run-noval",
        &["--batch-size", "180", "--lr", "1e30", "--val-fraction", "0"],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the run diverged: a weight is")
            || stderr.contains("the run diverged: the test loss is"),
        "{stderr}"
    );
    // lr = 1e308 is finite, but cosine's (1 + cos) / 2 · lr is not.
    let (code, stderr) = train("run2", &["--lr", "1e308"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("lr = 1e308") && stderr.contains("not a finite rate"),
        "{stderr}"
    );
}

/// Issue 27, item 1: two runs into one folder. The first holds the folder's lock for its whole
/// life; a second `--out` there, and a `--resume` of it while it trains, are refused naming its
/// process (before: both ran and the second overwrote the first's model, config and summary).
/// Once it ends (here: killed), the lock is gone with it.
#[cfg(target_os = "linux")]
#[test]
fn a_run_folder_is_locked_for_the_life_of_its_run() {
    let data = tempfile::tempdir().unwrap();
    common::write_tiny_fashion_mnist(data.path(), 64, 16).unwrap();
    let runs = tempfile::tempdir().unwrap();
    let out_dir = runs.path().join("x");
    let mut first = kiln()
        .args([
            "train",
            "--epochs",
            "500",
            "--batch-size",
            "16",
            "--no-progress",
            "--data",
        ])
        .arg(data.path())
        .arg("--out")
        .arg(&out_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // It has claimed the folder once its config is written.
    let start = std::time::Instant::now();
    while !out_dir.join("config.json").exists() {
        assert!(start.elapsed().as_secs() < 120, "the first run never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let holder = format!("in use by another kiln process (pid {})", first.id());
    let second = train_tiny(data.path(), &out_dir, "1");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&holder), "{stderr}");
    let resume = kiln()
        .args(["train", "--no-progress", "--resume"])
        .arg(&out_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&resume.stderr);
    assert_eq!(resume.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&holder), "{stderr}");
    // The first run's files are its own.
    let config = std::fs::read_to_string(out_dir.join("config.json")).unwrap();
    assert!(config.contains("\"epochs\": 500"), "{config}");
    first.kill().unwrap();
    first.wait().unwrap();
    // Dead, it blocks nothing: the folder is a run's (not empty), and a resume may take it.
    let again = train_tiny(data.path(), &out_dir, "1");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("is not empty") && stderr.contains("--resume"),
        "{stderr}"
    );
}

/// Issue 27, item 6: `--resume` never drops a flag. It refuses those that would change the run
/// (before: `--lr 5`, even another `--config`, were ignored with exit 0), extends the run with
/// `--epochs`, refuses a finished run without touching its figures (before: summary.json was
/// overwritten with `train_images_per_s: 0.0`), finishes one killed between its last checkpoint
/// and its summary, and starts again a run that failed before its first checkpoint.
#[test]
fn resume_refuses_flags_it_would_drop_extends_with_epochs_and_keeps_a_finished_run() {
    let data = tempfile::tempdir().unwrap();
    common::write_tiny_fashion_mnist(data.path(), 64, 16).unwrap();
    let runs = tempfile::tempdir().unwrap();
    let run = runs.path().join("r");
    succeeded(&train_tiny(data.path(), &run, "1"));
    let refused = kiln()
        .args([
            "train",
            "--no-progress",
            "--lr",
            "5",
            "--config",
            "x.toml",
            "--resume",
        ])
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--lr, --config cannot be combined with --resume"),
        "{stderr}"
    );
    let summary = std::fs::read(run.join("summary.json")).unwrap();
    let finished = kiln()
        .args(["train", "--no-progress", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert_eq!(finished.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the run already finished (1 of 1 epochs)"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(run.join("summary.json")).unwrap(), summary);
    // --epochs 2 trains one more epoch, and the run now says 2.
    let more = kiln()
        .args(["train", "--no-progress", "--epochs", "2", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    let stdout = succeeded(&more);
    assert!(
        stdout.contains("resuming") && stdout.contains("after epoch 1 of 2"),
        "{stdout}"
    );
    assert!(stdout.contains("epoch 2/2"), "{stdout}");
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["config"]["train"]["epochs"], 2);
    // Killed after its last checkpoint, before its summary: a resume finishes the run (test
    // figures, model, summary with the trained epochs' rate) without training again.
    for f in ["summary.json", "model.bpk"] {
        std::fs::remove_file(run.join(f)).unwrap();
    }
    let finish = kiln()
        .args(["train", "--no-progress", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    let stdout = succeeded(&finish);
    assert!(!stdout.contains("epoch 2/2"), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
    assert!(summary["train_images_per_s"].as_f64().unwrap() > 0.0, "{summary}");
    assert!(run.join("model.bpk").is_file());
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    // A run with no checkpoint (it failed before its first) starts again from epoch 1, to the
    // same figures as a fresh run.
    let fresh = runs.path().join("fresh");
    succeeded(&train_tiny(data.path(), &fresh, "1"));
    std::fs::remove_dir_all(fresh.join("checkpoints")).unwrap();
    let first_log = std::fs::read_to_string(fresh.join("metrics.jsonl")).unwrap();
    let again = kiln()
        .args(["train", "--no-progress", "--resume"])
        .arg(&fresh)
        .output()
        .unwrap();
    let stdout = succeeded(&again);
    assert!(
        stdout.contains("has no checkpoint yet; starting it again from epoch 1"),
        "{stdout}"
    );
    let key = |log: &str| -> Vec<(f64, f64)> {
        log.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["train_loss"].as_f64().unwrap(), v["val_acc"].as_f64().unwrap())
            })
            .collect()
    };
    let second_log = std::fs::read_to_string(fresh.join("metrics.jsonl")).unwrap();
    assert_eq!(key(&second_log), key(&first_log));
}

/// Issue 27, item 7: mistakes that can be found before training are, before the run folder
/// exists (before: each left a half-written folder that `--out` then called "not empty" and
/// `--resume` had "no checkpoint" in), and each names the setting to change.
#[test]
fn settings_that_cannot_train_are_refused_before_the_run_folder_exists() {
    let data = tempfile::tempdir().unwrap();
    common::write_tiny_fashion_mnist(data.path(), 64, 16).unwrap();
    let runs = tempfile::tempdir().unwrap();
    let d = data.path().display().to_string().replace('\\', "/");
    let cases: [(&str, &[&str], &str); 6] = [
        (
            "",
            &["--batch-size", "1000"],
            "train.batch_size = 1000: the training split has 58 samples (6 more are held out",
        ),
        (
            "",
            &["--val-fraction", "0.9999", "--batch-size", "16"],
            "data.val_fraction = 0.9999: the training split has 0 samples (64 more",
        ),
        (
            "[train.loss]\nclass_weights = [1.0, 2.0]\n",
            &[],
            "loss.class_weights = 2 weights: the model has 10 classes",
        ),
        (
            "[transforms]\neval = [{ op = \"resize\", height = 0, width = 32 }]\n",
            &[],
            "transforms.eval = stage 0: { height = 0, op = \"resize\", width = 32 }: height is 0",
        ),
        (
            "[transforms]\neval = [{ op = \"center-crop\", height = 40, width = 40 }]\n",
            &[],
            "transforms.eval = [{ height = 40, op = \"center-crop\", width = 40 }]: the training split's first image: sample 0: crop window [0, 0, 40, 40]",
        ),
        (
            "[transforms]\ntrain = [{ op = \"random-crop\", height = 20, width = 20, padding = 0 }]\n",
            &[],
            "the training images come out as 1x20x20 (CxHxW), the model takes 1x28x28",
        ),
    ];
    for (i, (toml, flags, said)) in cases.into_iter().enumerate() {
        let out_dir = runs.path().join(format!("run{i}"));
        let mut cmd = kiln();
        cmd.args(["train", "--no-progress"]);
        if toml.is_empty() {
            cmd.args(["--epochs", "1", "--data"]).arg(data.path()).args(flags);
        } else {
            let file = runs.path().join(format!("run{i}.toml"));
            std::fs::write(
                &file,
                format!("[data]\npath = \"{d}\"\n[train]\nepochs = 1\nbatch_size = 16\n{toml}"),
            )
            .unwrap();
            cmd.arg("--config").arg(&file);
        }
        let out = cmd.arg("--out").arg(&out_dir).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i}: {stderr}");
        assert!(stderr.contains(said), "case {i}: {stderr}");
        assert!(!out_dir.exists(), "case {i} left {}", out_dir.display());
    }
}

/// Issue 27, item 4: a 389 KB PNG claiming 20000 × 20000 pixels. Under a 3 GB address-space
/// limit (before: decoded whole, 2.8 GB with its copies, and aborted with "memory allocation of
/// 1200000000 bytes failed", exit 134, no file named) it is refused from its header: by
/// `predict`, and by `train` before the run folder exists even where it sits in the test split.
#[cfg(target_os = "linux")]
#[test]
fn an_image_bomb_is_refused_from_its_header_under_a_memory_limit() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    // A complete 8-bit grey PNG of zeros, deflated row by row.
    let bomb = {
        let crc = |b: &[u8]| {
            let mut h = flate2::Crc::new();
            h.update(b);
            h.sum()
        };
        let chunk = |png: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
            let body = [kind, data].concat();
            png.extend_from_slice(&(data.len() as u32).to_be_bytes());
            png.extend_from_slice(&body);
            png.extend_from_slice(&crc(&body).to_be_bytes());
        };
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let ihdr = [
            &20_000u32.to_be_bytes()[..],
            &20_000u32.to_be_bytes(),
            &[8, 0, 0, 0, 0],
        ]
        .concat();
        chunk(&mut png, b"IHDR", &ihdr);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let row = vec![0u8; 20_001];
        for _ in 0..20_000 {
            z.write_all(&row).unwrap();
        }
        chunk(&mut png, b"IDAT", &z.finish().unwrap());
        chunk(&mut png, b"IEND", b"");
        png
    };
    assert!(bomb.len() < 400_000, "{}", bomb.len());
    // A class-folder set with the bomb among 20 small images.
    let folder = dir.path().join("set");
    for class in ["a", "b"] {
        std::fs::create_dir_all(folder.join(class)).unwrap();
        for i in 0..10 {
            image::RgbImage::from_pixel(8, 8, image::Rgb([i * 20, 0, 0]))
                .save(folder.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    std::fs::write(folder.join("b/bomb.png"), &bomb).unwrap();
    let limited = |args: &[&std::ffi::OsStr]| {
        Command::new("bash")
            .arg("-c")
            .arg("ulimit -v 3000000; exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .output()
            .unwrap()
    };
    let out_dir = dir.path().join("run");
    let out = limited(&[
        "train".as_ref(),
        "--no-progress".as_ref(),
        "--epochs".as_ref(),
        "1".as_ref(),
        "--batch-size".as_ref(),
        "4".as_ref(),
        "--data".as_ref(),
        folder.as_os_str(),
        "--out".as_ref(),
        out_dir.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("b/bomb.png: 20000x20000 pixels (400000000) is more than the limit of 178956970"),
        "{stderr}"
    );
    assert!(!out_dir.exists());
    // With the budget raised on purpose, the header passes (the run would then decode it).
    let weights = dir.path().join("w");
    let small = dir.path().join("tiny");
    std::fs::create_dir(&small).unwrap();
    common::write_tiny_fashion_mnist(&small, 64, 16).unwrap();
    succeeded(&train_tiny(&small, &weights, "1"));
    let bomb_path = dir.path().join("bomb.png");
    std::fs::write(&bomb_path, &bomb).unwrap();
    let model = weights.join("model.bpk");
    let out = limited(&[
        "predict".as_ref(),
        "--weights".as_ref(),
        model.as_os_str(),
        "--input".as_ref(),
        bomb_path.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bomb.png: 20000x20000 pixels"), "{stderr}");
    assert!(!stderr.contains("memory allocation"), "{stderr}");
}

/// Issue 27, items 5 and 8: `predict --input x.npy` takes model-ready float32 arrays only (before:
/// uint8 0–255 went to the model unnormalised, NaN passed, an empty array printed nothing with
/// exit 0); a failed write (a full disk) of `transform --out` / `predict --out` leaves the
/// previous good file as it was (before: written in place, so the file was destroyed), and a
/// missing output folder is found before the work, not after.
#[cfg(target_os = "linux")]
#[test]
fn predict_takes_model_ready_arrays_only_and_outputs_are_written_atomically() {
    let data = tempfile::tempdir().unwrap();
    common::write_tiny_fashion_mnist(data.path(), 64, 16).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    succeeded(&train_tiny(data.path(), &run, "1"));
    let model = run.join("model.bpk");
    let npy = |name: &str, descr: &str, shape: &str, body: &[u8]| {
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(body);
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let floats = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let pixels = 28 * 28;
    let cases = [
        (
            npy("u8.npy", "|u1", "(1, 28, 28)", &vec![200u8; pixels]),
            "it holds uint8 values",
        ),
        (
            npy("empty.npy", "<f4", "(0, 1, 28, 28)", &[]),
            "shape [0, 1, 28, 28] holds no samples",
        ),
        (
            npy(
                "nan.npy",
                "<f4",
                "(1, 28, 28)",
                &floats(&[vec![0.0; 5], vec![f32::NAN], vec![0.0; pixels - 6]].concat()),
            ),
            "value 5 of sample 0 is NaN",
        ),
        (
            // Pixels as 0-255 floats, not normalised: beyond what normalised pixels can be.
            npy("raw.npy", "<f4", "(1, 28, 28)", &floats(&vec![255.0; pixels])),
            "value 0 of sample 0 is 255, far outside [-0.810, 2.02",
        ),
    ];
    for (path, said) in cases {
        let out = kiln()
            .args(["predict", "--weights"])
            .arg(&model)
            .arg("--input")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
        assert!(stderr.contains(said), "{}: {stderr}", path.display());
    }
    // A good array: fine.
    let good = npy(
        "good.npy",
        "<f4",
        "(8, 1, 28, 28)",
        &floats(&vec![0.5; 8 * pixels]),
    );
    succeeded(
        &kiln()
            .args(["predict", "--weights"])
            .arg(&model)
            .arg("--input")
            .arg(&good)
            .output()
            .unwrap(),
    );

    // Outputs: a good file, then a write that cannot complete (ulimit -f 1: 1 KiB).
    let out_json = dir.path().join("p.json");
    let predict = |limit: bool, out: &std::path::Path| {
        let script = if limit {
            "trap '' XFSZ; ulimit -f 1; exec \"$0\" \"$@\""
        } else {
            "exec \"$0\" \"$@\""
        };
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_kiln"))
            .args(["predict", "--weights"])
            .arg(&model)
            .arg("--input")
            .arg(&good)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    succeeded(&predict(false, &out_json));
    let before = std::fs::read(&out_json).unwrap();
    assert!(before.len() > 1024, "{} bytes: the limit must bite", before.len());
    let failed = predict(true, &out_json);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write") && stderr.contains("p.json") && stderr.contains("File too large"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&out_json).unwrap(),
        before,
        "the previous file must survive"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // No folder to write into: said before predicting.
    let nowhere = predict(false, &dir.path().join("no/such/p.json"));
    let stderr = String::from_utf8_lossy(&nowhere.stderr);
    assert_eq!(nowhere.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the folder") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

/// Issue 27, item 9: `lr-find` checks where its plot goes before the sweep (before: after the
/// whole sweep, and the suggestion was lost), and an import of a file that is not there says so
/// in words (before: Rust's debug text, `Reader(Io(Os { code: 2, .. }))`).
#[cfg(target_os = "linux")]
#[test]
fn lr_find_checks_its_plot_first_and_errors_read_as_sentences() {
    let data = tempfile::tempdir().unwrap();
    common::write_tiny_fashion_mnist(data.path(), 64, 16).unwrap();
    // 100000 steps would take many minutes: the refusal must come first.
    let mut cmd = kiln();
    cmd.args([
        "lr-find",
        "--no-progress",
        "--steps",
        "100000",
        "--batch-size",
        "16",
        "--plot",
    ])
    .arg(data.path().join("no/such/lr.png"))
    .arg("--data")
    .arg(data.path());
    let out = output_within(cmd, 60);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("lr.png: the folder") && stderr.contains("does not exist"),
        "{stderr}"
    );
    let out = kiln()
        .args(["import", "--arch", "resnet18", "--weights"])
        .arg(data.path().join("missing.pth"))
        .arg("--out")
        .arg(data.path().join("imported"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No such file or directory"), "{stderr}");
    assert!(
        !stderr.contains("Os {") && !stderr.contains("Reader("),
        "{stderr}"
    );
}

/// Issue 27, item 7: `doctor` reads every sample of every split (before: the training split's
/// first batch only, so a broken test image waited for the end of a run). A PNG cut after its
/// header passes the up-front header check; doctor's read finds it, naming the split and file.
#[test]
fn doctor_reads_every_split_and_names_a_broken_test_image() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("set");
    // train/ and val/ (val is the test split in this layout; blue sorts first, so red/1.png is
    // the test split's sample 4).
    colour_folder(&root, &[("red", [200, 30, 30]), ("blue", [30, 30, 200])], 6, 3);
    let good = std::fs::read(root.join("val/red/0.png")).unwrap();
    std::fs::write(root.join("val/red/1.png"), &good[..good.len() - 20]).unwrap();
    let out = kiln()
        .args(["doctor", "--no-progress", "--batch-size", "4", "--data"])
        .arg(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("[FAIL] every split reads: the test split: sample 4:")
            && stdout.contains("val/red/1.png"),
        "{stdout}"
    );
    // Without the broken file, every split reads.
    std::fs::write(root.join("val/red/1.png"), &good).unwrap();
    let ok = kiln()
        .args(["doctor", "--no-progress", "--batch-size", "4", "--data"])
        .arg(&root)
        .output()
        .unwrap();
    // (Solid colours fail the normalisation check: that is another check's verdict.)
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        stdout.contains("[ ok ] every split reads: every sample decoded and transformed: training"),
        "{stdout}"
    );
}

/// `kiln train --tensorboard DIR` (issue 26's TensorBoard part): an event file under
/// DIR/<run folder>/ with the loss and learning rate of every step, every epoch figure, the first
/// training samples as a PNG and the config as text. Read back here by kiln's own reader (every
/// record's CRCs), and by TensorBoard's `EventAccumulator` when the `tensorboard` Python package
/// is installed (`scripts/check_tensorboard.py`; said when it is not).
#[test]
fn tensorboard_logs_read_back_with_kiln_and_with_tensorboard() {
    use kiln_train::tensorboard::{Kind, What, read_events};
    let data = tempfile::tempdir().unwrap();
    common::write_tiny_fashion_mnist(data.path(), 64, 16).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (run, logs) = (dir.path().join("r"), dir.path().join("tb"));
    let out = kiln()
        .args([
            "train",
            "--no-progress",
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--data",
        ])
        .arg(data.path())
        .arg("--out")
        .arg(&run)
        .arg("--tensorboard")
        .arg(&logs)
        .output()
        .unwrap();
    let stdout = succeeded(&out);
    assert!(stdout.contains("tensorboard: "), "{stdout}");
    let folder = logs.join("r");
    let files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let events = read_events(&std::fs::read(&files[0]).unwrap()).unwrap();
    let mut scalars: std::collections::BTreeMap<String, Vec<(i64, f32)>> = Default::default();
    let (mut images, mut texts) = (0, 0);
    for e in &events {
        if let Some(What::Summary(s)) = &e.what {
            for v in &s.value {
                match &v.kind {
                    Some(Kind::SimpleValue(x)) => {
                        scalars.entry(v.tag.clone()).or_default().push((e.step, *x))
                    }
                    Some(Kind::Image(img)) => {
                        assert!(img.encoded_image_string.starts_with(b"\x89PNG"));
                        images += 1;
                    }
                    Some(Kind::Tensor(_)) => texts += 1,
                    None => panic!("an empty value"),
                }
            }
        }
    }
    // 64 images, 10% held out: 57 train → 3 steps of 16 per epoch.
    assert_eq!(scalars["step/train_loss"].len(), 6);
    assert_eq!(scalars["step/lr"][0], (1, 0.05));
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let first_epoch: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(
        scalars["epoch/val_acc"][0],
        (1, first_epoch["val_acc"].as_f64().unwrap() as f32)
    );
    assert_eq!((images, texts), (1, 1));
    let python = Command::new("python3")
        .args(["-c", "import tensorboard"])
        .output();
    if python.is_ok_and(|o| o.status.success()) {
        let check = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../scripts/check_tensorboard.py"
            ))
            .arg(&folder)
            .args(["2", "3"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success(),
            "{said}\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(said.contains("tensorboard read everything"), "{said}");
    } else {
        eprintln!("the tensorboard Python package is not installed: TensorBoard's own reader was not run");
    }
}

/// Writes `cases` as `manifest` and runs `scripts/check_onnx.py` on it (ONNX's checker and ONNX
/// Runtime against the expected outputs, 1e-4) when Python has onnx and onnxruntime; says so when not.
fn onnxruntime_agrees(manifest: &std::path::Path, cases: &[serde_json::Value]) {
    std::fs::write(manifest, serde_json::to_vec(cases).unwrap()).unwrap();
    let have = Command::new("python3")
        .args(["-c", "import onnx, onnxruntime"])
        .output();
    if !have.is_ok_and(|o| o.status.success()) {
        eprintln!("the onnx/onnxruntime Python packages are not installed: ONNX Runtime's check was not run");
        return;
    }
    let check = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/check_onnx.py"
        ))
        .arg(manifest)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    println!("{said}");
    assert!(
        check.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        said.contains(&format!("onnxruntime agrees on {} models", cases.len())),
        "{said}"
    );
}

/// `kiln export` (issue 25): a trained run as ONNX — dynamic batch, fixed batch, BatchNorm
/// folded — that ONNX Runtime runs to the probabilities `kiln predict` gives on the same
/// model-ready inputs (within 1e-4, `scripts/check_onnx.py`, when the onnx and onnxruntime
/// Python packages are installed; said when not), with the preprocessing in its metadata; and
/// the refusals, before anything is written.
#[test]
fn export_writes_onnx_that_onnxruntime_runs_like_predict() {
    use kiln_models::onnx::proto::ModelProto;
    use prost::Message;
    let data = tempfile::tempdir().unwrap();
    common::write_tiny_fashion_mnist(data.path(), 64, 16).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    succeeded(&train_tiny(data.path(), &run, "1"));
    // Model-ready inputs over the normalized range of Fashion-MNIST pixels ((0..1 - 0.286) / 0.353).
    let mut state = 7u32;
    let mut inputs = |n: usize| -> Vec<f32> {
        (0..n * 28 * 28)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.286) / 0.353
            })
            .collect()
    };
    let mut cases = Vec::new();
    for (batch, flags) in [
        (7, vec!["--dynamic-batch"]),
        (7, vec!["--dynamic-batch", "--fold-bn", "--opset", "13"]),
        (1, vec![]),
        (3, vec!["--batch", "3", "--fold-bn"]),
    ] {
        let stem = format!("b{batch}{}", flags.join("").replace("--", "-"));
        let x = dir.path().join(format!("{stem}-x.npy"));
        kiln_data::npy::write_f32(&x, &[batch, 1, 28, 28], &inputs(batch)).unwrap();
        let probs = dir.path().join(format!("{stem}-probs.npy"));
        let out = kiln()
            .args(["predict", "--weights"])
            .arg(run.join("model.bpk"))
            .arg("--input")
            .arg(&x)
            .arg("--out")
            .arg(&probs)
            .output()
            .unwrap();
        succeeded(&out);
        let onnx = dir.path().join(format!("{stem}.onnx"));
        let out = kiln()
            .args(["export", "--run"])
            .arg(&run)
            .arg("--out")
            .arg(&onnx)
            .args(&flags)
            .output()
            .unwrap();
        let stdout = succeeded(&out);
        assert!(
            stdout.contains("kiln export: ") && stdout.contains("Conv x2"),
            "{stdout}"
        );
        let model = ModelProto::decode(std::fs::read(&onnx).unwrap().as_slice()).unwrap();
        let ops: Vec<&str> = model
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type())
            .collect();
        assert_eq!(
            ops.contains(&"BatchNormalization"),
            !flags.contains(&"--fold-bn"),
            "{ops:?}"
        );
        let meta: std::collections::BTreeMap<&str, &str> = model
            .metadata_props
            .iter()
            .map(|p| (p.key(), p.value()))
            .collect();
        assert_eq!(
            (
                meta["model"],
                meta["colour_order"],
                meta["input_chw"],
                meta["normalization"]
            ),
            ("reference-cnn", "grey", "[1, 28, 28]", "fashion-mnist")
        );
        let names: Vec<String> = serde_json::from_str(meta["class_names"]).unwrap();
        assert_eq!(names.len(), 10);
        cases.push(serde_json::json!({
            "onnx": format!("{stem}.onnx"),
            "input": format!("{stem}-x.npy"),
            "probabilities": format!("{stem}-probs.npy"),
        }));
    }
    onnxruntime_agrees(&dir.path().join("manifest.json"), &cases);

    // Refusals: usage errors exit 2 and a model without a torchvision layout exits 1, each
    // before anything is written.
    let refused = |args: &[&str], code: i32, says: &str| {
        let target = dir.path().join(args.last().unwrap());
        let out = kiln()
            .args(["export", "--run"])
            .arg(&run)
            .args(&args[..args.len() - 1])
            .arg("--out")
            .arg(&target)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!target.exists(), "{args:?} wrote {}", target.display());
    };
    refused(&["--opset", "9", "x.onnx"], 2, "kiln writes opsets 13 to 21");
    refused(&["m.txt"], 2, "name it .onnx");
    refused(
        &["--format", "safetensors", "--fold-bn", "m.safetensors"],
        2,
        "--fold-bn is for --format onnx",
    );
    refused(
        &["--format", "safetensors", "m.safetensors"],
        1,
        "torchvision has no such model",
    );
    refused(&["missing/m.onnx"], 2, "does not exist");
}

/// The torchvision-layout ResNet-20 fixture (PyTorch's own eval logits, `scripts/make_resnet_fixture.py`)
/// through `kiln import` and `kiln export`: the ONNX graph gives PyTorch's logits in ONNX Runtime
/// (within 1e-4, folded or not; when the Python packages are installed), and `--format safetensors`
/// writes back the fixture's tensor names and shapes.
#[test]
fn an_imported_resnet_exports_to_onnx_with_pytorchs_logits_and_back_to_torchvisions_layout() {
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-models/tests/fixtures/cifar_resnet20");
    let root = tempfile::tempdir().unwrap();
    let imported = root.path().join("imported");
    let out = kiln()
        .args(["import", "--arch", "cifar-resnet20", "--classes", "10"])
        .args(["--normalization", "cifar10", "--input-size", "32x32", "--weights"])
        .arg(fixtures.join("weights.safetensors"))
        .arg("--out")
        .arg(&imported)
        .output()
        .unwrap();
    succeeded(&out);
    let raw = |name: &str| -> Vec<f32> {
        std::fs::read(fixtures.join(name))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    kiln_data::npy::write_f32(&root.path().join("x.npy"), &[2, 3, 32, 32], &raw("input.f32")).unwrap();
    kiln_data::npy::write_f32(&root.path().join("logits.npy"), &[2, 10], &raw("logits.f32")).unwrap();
    let mut cases = Vec::new();
    for (name, flags) in [
        ("plain.onnx", vec!["--dynamic-batch"]),
        ("folded.onnx", vec!["--batch", "2", "--fold-bn"]),
    ] {
        let out = kiln()
            .args(["export", "--weights"])
            .arg(imported.join("model.bpk"))
            .args(&flags)
            .arg("--out")
            .arg(root.path().join(name))
            .output()
            .unwrap();
        let stdout = succeeded(&out);
        assert!(stdout.contains("Add x9"), "nine residual joins: {stdout}");
        cases.push(serde_json::json!({"onnx": name, "input": "x.npy", "logits": "logits.npy"}));
    }
    onnxruntime_agrees(&root.path().join("manifest.json"), &cases);

    let back = root.path().join("back.safetensors");
    let out = kiln()
        .args(["export", "--format", "safetensors", "--weights"])
        .arg(imported.join("model.bpk"))
        .arg("--out")
        .arg(&back)
        .output()
        .unwrap();
    succeeded(&out);
    let (original, _) =
        kiln_models::weights::safetensors_header(&fixtures.join("weights.safetensors")).unwrap();
    let (written, meta) = kiln_models::weights::safetensors_header(&back).unwrap();
    let original: std::collections::BTreeMap<_, _> = original
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .collect();
    assert_eq!(written, original);
    assert!(meta.contains_key("kiln.pretrained"), "{meta:?}");
}

/// `kiln train --ema DECAY` (issue 26, weights average): each epoch is validated on the raw and
/// the averaged weights (`val_ema_*` in metrics.jsonl), the averaged weights are tested and saved
/// as model_ema.bpk with their spec (so predict takes them), and a run stopped after epoch 1 and
/// resumed ends where the uninterrupted run does — the average included.
#[test]
fn a_weight_average_is_validated_saved_and_resumed_exactly() {
    let data = tempfile::tempdir().unwrap();
    common::write_tiny_fashion_mnist(data.path(), 96, 24).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &std::path::Path, epochs: &str, resume: bool| {
        let mut cmd = kiln();
        if resume {
            cmd.args(["train", "--no-progress", "--epochs", epochs, "--resume"])
                .arg(out);
        } else {
            cmd.args(["train", "--no-progress", "--epochs", epochs, "--batch-size", "16"])
                .args(["--schedule", "constant", "--ema", "0.9", "--data"])
                .arg(data.path())
                .arg("--out")
                .arg(out);
        }
        succeeded(&cmd.output().unwrap())
    };
    let straight = dir.path().join("straight");
    let stdout = run(&straight, "2", false);
    assert!(
        stdout.contains("averaged weights (train.ema): test_loss="),
        "{stdout}"
    );
    let lines = |out: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let records = lines(&straight);
    assert_eq!(records.len(), 2);
    for r in &records {
        for key in ["val_acc", "val_loss", "val_ema_acc", "val_ema_loss"] {
            assert!(r[key].is_f64(), "{key} missing: {r}");
        }
    }
    // With decay 0.9 over a few steps, the average is not the final model.
    assert_ne!(records[1]["val_ema_loss"], records[1]["val_loss"]);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(straight.join("summary.json")).unwrap()).unwrap();
    assert!(summary["ema"]["test_acc"].is_f64(), "{summary}");
    assert!(straight.join("model_ema.bpk.kiln.json").is_file());
    let out = kiln()
        .args(["predict", "--weights"])
        .arg(straight.join("model_ema.bpk"))
        .arg("--input")
        .arg(data.path().join("t10k-images-idx3-ubyte.gz"))
        .output()
        .unwrap();
    // An idx file is not an image: the point is that the weights and spec load (the error is about the input).
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains("model_ema.bpk.kiln.json"), "{said}");

    let resumed = dir.path().join("resumed");
    run(&resumed, "1", false);
    run(&resumed, "2", true);
    let (a, b) = (lines(&straight), lines(&resumed));
    for key in ["train_loss", "val_loss", "val_acc", "val_ema_loss", "val_ema_acc"] {
        assert_eq!(a[1][key], b[1][key], "{key} after resuming");
    }
}

/// `kiln train --mixup A --cutmix A` (issue 26, batch mixing): training runs on soft targets, and
/// the mix of each batch is seeded by the run and the batch's samples, so the run is the same with
/// 0 or 3 loader workers; bad settings are refused before the run folder exists.
#[test]
fn mixup_and_cutmix_train_the_same_for_any_worker_count() {
    let data = tempfile::tempdir().unwrap();
    common::write_tiny_fashion_mnist(data.path(), 96, 24).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, workers: &str| {
        let out = dir.path().join(name);
        let stdout = succeeded(
            &kiln()
                .args(["train", "--no-progress", "--epochs", "2", "--batch-size", "16"])
                .args([
                    "--mixup",
                    "0.8",
                    "--cutmix",
                    "1.0",
                    "--workers",
                    workers,
                    "--data",
                ])
                .arg(data.path())
                .arg("--out")
                .arg(&out)
                .output()
                .unwrap(),
        );
        assert!(stdout.contains("summary: "), "{stdout}");
        let config = std::fs::read_to_string(out.join("config.json")).unwrap();
        assert!(config.contains("\"cutmix_alpha\": 1.0"), "{config}");
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["train_loss"].as_f64().unwrap(),
                    v["train_acc"].as_f64().unwrap(),
                    v["val_loss"].as_f64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let (a, b) = (run("w0", "0"), run("w3", "3"));
    assert_eq!(a, b);
    let refused = kiln()
        .args(["train", "--no-progress", "--mixup=-1", "--data"])
        .arg(data.path())
        .arg("--out")
        .arg(dir.path().join("bad"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("mixup.mixup_alpha"), "{stderr}");
    assert!(!dir.path().join("bad").exists());
}

/// `data.jpeg_draft = true`: a run on large JPEGs decodes them at reduced size, the weights' spec
/// records it, and `kiln predict` decodes the same way (its answer changes when the spec says
/// otherwise); on another format the key is refused before anything is written.
#[test]
fn jpeg_draft_is_recorded_with_the_weights_and_predict_follows_it() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-data/tests/fixtures/draft");
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("photos");
    for (class, file) in [("a", "large.jpg"), ("b", "mosaic_420.jpg")] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..6 {
            std::fs::copy(fixtures.join(file), data.join(class).join(format!("{i}.jpg"))).unwrap();
        }
    }
    let run = root.path().join("run");
    let out = kiln()
        .args([
            "train",
            "--model",
            "cifar-resnet20",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--no-progress",
        ])
        .args(["--set", "data.jpeg_draft=true", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    succeeded(&out);
    let spec_path = run.join("model.bpk.kiln.json");
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&spec_path).unwrap()).unwrap();
    assert_eq!(spec["jpeg_draft"], true, "{spec}");

    // The weights alone with their spec (no run file beside them: the spec decides).
    let alone = root.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    std::fs::copy(run.join("model.bpk"), alone.join("model.bpk")).unwrap();
    let predict = |spec: &serde_json::Value| {
        std::fs::write(alone.join("model.bpk.kiln.json"), spec.to_string()).unwrap();
        let out = kiln()
            .args(["predict", "--json", "--top-k", "2", "--weights"])
            .arg(alone.join("model.bpk"))
            .arg("--input")
            .arg(fixtures.join("mosaic_420.jpg"))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
        v[0]["top_k"][0]["probability"].as_f64().unwrap()
    };
    let drafted = predict(&spec);
    let mut full_spec = spec.clone();
    full_spec["jpeg_draft"] = serde_json::json!(false);
    let full = predict(&full_spec);
    assert_ne!(
        drafted, full,
        "predict decoded the JPEG the same way with and without the draft"
    );
    assert_eq!(predict(&spec), drafted);

    let mnist = root.path().join("mnist");
    std::fs::create_dir(&mnist).unwrap();
    common::write_tiny_fashion_mnist(&mnist, 64, 16).unwrap();
    let refused = root.path().join("refused");
    let out = kiln()
        .args(["train", "--set", "data.jpeg_draft=true", "--data"])
        .arg(&mnist)
        .arg("--out")
        .arg(&refused)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("data.jpeg_draft") && stderr.contains("image folders"),
        "{stderr}"
    );
    assert!(!refused.exists(), "a refused run leaves no folder");
}

/// Started by `mpirun -np 2` (its environment), a kiln built without the `mpi` feature refuses
/// to train: each copy would train alone into the same run folder.
#[cfg(not(feature = "mpi"))]
#[test]
fn a_kiln_without_mpi_refuses_to_train_under_mpirun() {
    let root = tempfile::tempdir().unwrap();
    for (rank, size) in [
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS"),
    ] {
        let out = kiln()
            .args(["train", "--epochs", "1", "--no-progress", "--out"])
            .arg(root.path().join("run"))
            .env(rank, "1")
            .env(size, "2")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("started as rank 1 of 2 processes") && stderr.contains("--features mpi"),
            "{stderr}"
        );
        assert!(!root.path().join("run").exists());
    }
}

/// `kiln score`: pycocotools' summary lines on its fixture (see
/// crates/kiln-train/tests/coco_eval_vs_pycocotools.rs), the same numbers as JSON, a warning for
/// the detection of an unlisted category, and a clear error for a results file of unknown images.
#[test]
fn score_prints_pycocotools_summary_and_json() {
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-train/tests/fixtures/coco_eval");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("expected.json")).unwrap()).unwrap();
    let case = &expected["cases"]["mixed"];
    let score = |extra: &[&str], dt: &str| {
        kiln()
            .arg("score")
            .arg("--annotations")
            .arg(fixtures.join("mixed-gt.json"))
            .arg("--detections")
            .arg(fixtures.join(dt))
            .args(extra)
            .output()
            .unwrap()
    };
    let out = score(&[], "mixed-dt.json");
    let text = succeeded(&out);
    assert!(text.starts_with(case["printed"].as_str().unwrap()), "{text}");
    assert!(text.contains("class90 (90)"), "per-category table: {text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: 1 detections have a category id"),
        "{stderr}"
    );

    let out = score(&["--json"], "mixed-dt.json");
    let json: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
    let ap = json["summary"]["AP"].as_f64().unwrap();
    assert!((ap - case["stats"][0].as_f64().unwrap()).abs() < 1e-12, "{json}");
    assert_eq!(json["stats"].as_array().unwrap().len(), 12);

    let dir = tempfile::tempdir().unwrap();
    let stray = dir.path().join("stray.json");
    std::fs::write(
        &stray,
        r#"[{"image_id": 4242, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]"#,
    )
    .unwrap();
    let out = score(&[], stray.to_str().unwrap());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stray.json") && stderr.contains("image id 4242") && stderr.contains("mixed-gt.json"),
        "{stderr}"
    );
}

/// `kiln make-detection`: pasted Fashion-MNIST items become COCO folders that `inspect` reads as
/// detection data; the same seed gives the same files; a non-empty --out is refused.
#[test]
fn make_detection_writes_coco_folders_inspect_reads() {
    let root = tempfile::tempdir().unwrap();
    let make = |out: &std::path::Path| {
        kiln()
            .args([
                "make-detection",
                "--train",
                "6",
                "--val",
                "3",
                "--size",
                "96",
                "--out",
            ])
            .arg(out)
            .output()
            .unwrap()
    };
    let first = root.path().join("a");
    let stdout = succeeded(&make(&first));
    assert!(
        stdout.contains("train: 6 images") && stdout.contains("val: 3 images"),
        "{stdout}"
    );
    let out = kiln()
        .args(["inspect", "--data"])
        .arg(first.join("val"))
        .output()
        .unwrap();
    let text = succeeded(&out);
    assert!(
        text.contains("COCO detection: 3 images") && text.contains("Ankle boot"),
        "{text}"
    );
    assert!(text.contains("[96, 96, 3] HWC BGR u8"), "{text}");

    let second = root.path().join("b");
    succeeded(&make(&second));
    for file in [
        "train/annotations.json",
        "train/images/000005.png",
        "val/images/000000.png",
    ] {
        assert_eq!(
            std::fs::read(first.join(file)).unwrap(),
            std::fs::read(second.join(file)).unwrap(),
            "{file}: same seed, same bytes"
        );
    }
    let again = make(&first);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
}

#[path = "../../kiln-models/tests/fcos_fixture/mod.rs"]
mod fcos_fixture;

/// A detector from the command line: `make-detection`, `train --model fcos` (the COCO table at the
/// end), `eval` printing it again from the weights, `predict` writing COCO results that `score`
/// reads and drawing boxes, and `import` of a torchvision FCOS state dict.
#[test]
fn a_detector_trains_evaluates_predicts_and_imports_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("det");
    succeeded(
        &kiln()
            .args([
                "make-detection",
                "--train",
                "16",
                "--val",
                "8",
                "--size",
                "64",
                "--max-objects",
                "2",
                "--max-scale",
                "1.8",
                "--out",
            ])
            .arg(&data)
            .output()
            .unwrap(),
    );
    // The folder is COCO splits (not an image folder with a class `images`): inspect shows the
    // training split's boxes; a classifier is pointed to a detector.
    let text = succeeded(&kiln().arg("inspect").arg("--data").arg(&data).output().unwrap());
    assert!(text.starts_with("COCO detection: 16 images"), "{text}");
    let refused = kiln()
        .args(["train", "--epochs", "1", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--model fcos"));
    let run = dir.path().join("run");
    let out = kiln()
        .args([
            "train",
            "--model",
            "fcos",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--lr",
            "0.01",
            "--no-progress",
            "--json",
        ])
        .args([
            "--set",
            "model.backbone=resnet18",
            "--set",
            "model.channels=32",
            "--set",
            "model.head_convs=1",
        ])
        .args([
            "--set",
            "model.min_size=64",
            "--set",
            "model.max_size=64",
            "--set",
            "model.score_thresh=0.05",
        ])
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FCOS(ResNet-18 FPN") && stderr.contains("val_AP="),
        "{stderr}"
    );
    let coco = &v["summary"]["coco"];
    assert_eq!(coco["split"], "val", "{v}");
    let trained_stats = coco["metrics"]["stats"].as_array().unwrap().clone();

    // eval from the run folder prints pycocotools' table and the same numbers.
    let text = succeeded(&kiln().arg("eval").arg("--run").arg(&run).output().unwrap());
    assert!(
        text.contains("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]"),
        "{text}"
    );
    assert!(text.contains("Ankle boot (10)"), "{text}");
    let e: serde_json::Value = serde_json::from_str(&succeeded(
        &kiln()
            .arg("eval")
            .arg("--run")
            .arg(&run)
            .arg("--json")
            .output()
            .unwrap(),
    ))
    .unwrap();
    assert_eq!(e["metrics"]["stats"].as_array().unwrap(), &trained_stats);
    // The weights alone, on the COCO folder itself: the same figures.
    let e: serde_json::Value = serde_json::from_str(&succeeded(
        &kiln()
            .args(["eval", "--json", "--weights"])
            .arg(run.join("model.bpk"))
            .arg("--data")
            .arg(data.join("val"))
            .output()
            .unwrap(),
    ))
    .unwrap();
    assert_eq!(e["metrics"]["stats"].as_array().unwrap(), &trained_stats);

    // predict on the validation folder: COCO results with its image ids, scored by `kiln score`.
    let weights = run.join("model.bpk");
    let dets = dir.path().join("dets.json");
    succeeded(
        &kiln()
            .args(["predict", "--weights"])
            .arg(&weights)
            .arg("--input")
            .arg(data.join("val"))
            .arg("--out")
            .arg(&dets)
            .output()
            .unwrap(),
    );
    let s: serde_json::Value = serde_json::from_str(&succeeded(
        &kiln()
            .arg("score")
            .arg("--annotations")
            .arg(data.join("val/annotations.json"))
            .arg("--detections")
            .arg(&dets)
            .arg("--json")
            .output()
            .unwrap(),
    ))
    .unwrap();
    let (a, b) = (
        s["stats"][1].as_f64().unwrap(),
        trained_stats[1].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-3, "AP50 {a} vs {b}");
    // One image drawn; an output it cannot write is a usage error.
    let png = dir.path().join("boxes.png");
    let image = data.join("val/images/000000.png");
    succeeded(
        &kiln()
            .args(["predict", "--weights"])
            .arg(&weights)
            .arg("--input")
            .arg(&image)
            .arg("--out")
            .arg(&png)
            .output()
            .unwrap(),
    );
    assert!(png.is_file());
    let bad = kiln()
        .args(["predict", "--weights"])
        .arg(&weights)
        .arg("--input")
        .arg(data.join("val"))
        .arg("--out")
        .arg(dir.path().join("one.png"))
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // import: torchvision's FCOS state dict (the fixture's ResNet-18, 3 classes).
    let fixture: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../kiln-models/tests/fixtures/fcos/cases.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let tv = dir.path().join("fcos.safetensors");
    fcos_fixture::write_weights(&fixture, &tv);
    let imported = dir.path().join("imported");
    let text = succeeded(
        &kiln()
            .args([
                "import",
                "--arch",
                "fcos",
                "--backbone",
                "resnet18",
                "--classes",
                "3",
                "--weights",
            ])
            .arg(&tv)
            .arg("--out")
            .arg(&imported)
            .output()
            .unwrap(),
    );
    assert!(text.contains("fcos, 3 classes"), "{text}");
    let p: serde_json::Value = serde_json::from_str(&succeeded(
        &kiln()
            .args(["predict", "--json", "--weights"])
            .arg(imported.join("model.bpk"))
            .arg("--input")
            .arg(&image)
            .output()
            .unwrap(),
    ))
    .unwrap();
    assert_eq!(p[0]["size"], serde_json::json!([64, 64]), "{p}");
    let bad = kiln()
        .args(["import", "--arch", "fcos", "--backbone", "vgg16", "--weights"])
        .arg(&tv)
        .arg("--out")
        .arg(dir.path().join("vgg"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("resnet18"));
    // The default backbone (ResNet-50) does not fit these weights: the import says which tensors.
    let wrong = kiln()
        .args(["import", "--arch", "fcos", "--classes", "3", "--weights"])
        .arg(&tv)
        .arg("--out")
        .arg(dir.path().join("wrong"))
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("fcos.safetensors"), "{err}");
}

/// Output into a pipe whose reader is gone (`kiln models | head -1` once head has exited) ends
/// kiln by SIGPIPE, as it ends other Unix tools, not with a panic about a broken pipe.
#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = kiln()
        .arg("models")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}
