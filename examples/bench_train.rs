//! Training and inference throughput of a zoo model on random data, for `bench/models.sh`.
//!
//! ```sh
//! cargo run --release -p kiln-suite --example bench_train -- --model reference --mode train
//! cargo run --release -p kiln-suite --example bench_train -- --model resnet18-cifar --mode infer
//! cargo run --release -p kiln-suite --example bench_train -- --model resnet18 --mode infer \
//!     --batch 16 --save-weights /tmp/r18/model.bpk
//! ```
//!
//! The work is the one `bench/torch_models.py` times for PyTorch: batch 128 of random inputs
//! (28×28×1 for the reference CNN, 32×32×3 for the CIFAR ResNet-18), cross-entropy, SGD momentum
//! 0.9 with weight decay 5e-4 (kiln's default rule); `--mode infer` times eval-mode forwards only.
//! Two warm-up steps are not timed. Prints `train_images_per_s=…` or `infer_images_per_s=…`, and
//! `peak_rss_mb=…` (the process's high-water mark, `VmHWM`). One mode per process, so the peak
//! belongs to that mode. `--model resnet18` is torchvision's ResNet-18 (224×224×3, 1000 classes);
//! Any other `kiln models` name (`--model mobilenet_v3_large`) runs that model on its default
//! input (1000 classes at 224×224, 10 otherwise), as `bench/torch_models.py` does for torchvision's.
//! `--save-weights FILE` also writes the (seeded, random) model as a kiln checkpoint with a
//! torchvision-ImageNet spec, for `kiln export` and `kiln predict` (`bench/onnx.sh`).

use anyhow::{Context, bail};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use kiln_models::{Classifier, ReferenceCnnConfig, ResNetConfig, ResNetKind};
use kiln_train::{LossConfig, OptimizerConfig};
use std::time::Instant;

struct Args {
    model: String,
    mode: String,
    batch: usize,
    steps: usize,
    save_weights: Option<std::path::PathBuf>,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        model: "reference".into(),
        mode: "train".into(),
        batch: 128,
        steps: 0,
        save_weights: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.model = value()?,
            "--mode" => a.mode = value()?,
            "--batch" => a.batch = value()?.parse().context("--batch")?,
            "--steps" => a.steps = value()?.parse().context("--steps")?,
            "--save-weights" => a.save_weights = Some(value()?.into()),
            "-h" | "--help" => {
                println!(
                    "bench_train [--model reference|resnet18-cifar|resnet18|NAME] [--mode train|infer] [--batch 128] [--steps N] [--save-weights FILE]\n  NAME: any `kiln models` name (its default input; 1000 classes at 224x224, else 10)"
                );
                std::process::exit(0);
            }
            other => bail!("unknown flag `{other}`"),
        }
    }
    Ok(a)
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    // As the `kiln` binary at start-up: freed activation buffers stay in the heap for reuse
    // instead of being unmapped and faulted in again every step (a quarter of a step otherwise).
    kiln_data::alloc::tune_for_loading();
    let device = Device::flex();
    device.seed(0);
    match args.model.as_str() {
        "reference" => run(&args, ReferenceCnnConfig::new().init(&device)?, [1, 28, 28], 40),
        "resnet18-cifar" => run(
            &args,
            ResNetConfig::new(ResNetKind::Cifar18).init(&device)?,
            [3, 32, 32],
            6,
        ),
        "resnet18" => run(
            &args,
            ResNetConfig::new(ResNetKind::ResNet18)
                .with_num_classes(1000)
                .init(&device)?,
            [3, 224, 224],
            4,
        ),
        // Any other registry name (`kiln models`): its default input, 1000 classes for ImageNet
        // inputs (224×224) and 10 otherwise, 3 timed steps.
        other => {
            let config = kiln_models::ModelConfig::from_name(other)?;
            let chw = config.default_input();
            let classes = if chw[1] >= 224 { 1000 } else { 10 };
            config.build_with(chw, classes, &device, Bench { args: &args, chw })?
        }
    }
}

struct Bench<'a> {
    args: &'a Args,
    chw: [usize; 3],
}

impl kiln_models::ModelFn for Bench<'_> {
    type Output = anyhow::Result<()>;

    fn call<M: kiln_models::ZooModel>(self, model: M) -> anyhow::Result<()> {
        run(self.args, model, self.chw, 3)
    }
}

fn run<M: Classifier>(args: &Args, model: M, chw: [usize; 3], default_steps: usize) -> anyhow::Result<()> {
    let device = Device::flex();
    let steps = if args.steps == 0 {
        default_steps
    } else {
        args.steps
    };
    let shape = [args.batch, chw[0], chw[1], chw[2]];
    if let Some(path) = &args.save_weights {
        if args.model != "resnet18" {
            bail!("--save-weights writes a torchvision ImageNet spec: use it with --model resnet18");
        }
        let spec = kiln_models::PretrainedSpec::torchvision_imagenet(&args.model);
        kiln_models::weights::save_weights(&model, path, Some(&spec))?;
    }
    let ad = device.clone().autodiff();
    let loss_fn = LossConfig::default();
    let targets: Vec<i32> = (0..args.batch).map(|i| (i * 7 % 10) as i32).collect();

    let per_s = match args.mode.as_str() {
        "train" => {
            let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &ad);
            let y = Tensor::<1, Int>::from_data(targets.as_slice(), &ad);
            let mut optim = OptimizerConfig::default().build(vec![])?;
            let mut model = model.fork(&ad).train();
            let mut t0 = Instant::now();
            for i in 0..steps + 2 {
                if i == 2 {
                    t0 = Instant::now();
                }
                let loss = loss_fn.forward(model.logits(x.clone()), y.clone());
                let _: f32 = loss.clone().into_scalar();
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(0.05, model, grads);
            }
            device.sync()?;
            (steps * args.batch) as f64 / t0.elapsed().as_secs_f64()
        }
        "infer" => {
            let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let model = model.valid();
            let mut t0 = Instant::now();
            for i in 0..steps + 2 {
                if i == 2 {
                    t0 = Instant::now();
                }
                let _ = model.logits(x.clone()).into_data();
            }
            (steps * args.batch) as f64 / t0.elapsed().as_secs_f64()
        }
        other => bail!("unknown mode `{other}`: expected train or infer"),
    };
    println!(
        "{}_images_per_s={per_s:.1} steps={steps} batch={} peak_rss_mb={:.0}",
        args.mode,
        args.batch,
        peak_rss_mb()
    );
    Ok(())
}
