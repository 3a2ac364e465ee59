//! The ONNX export of every registered model (issue 25): the graph's structure, names and
//! metadata here, and its numbers in ONNX Runtime when the `onnx` and `onnxruntime` Python
//! packages are installed (`scripts/check_onnx.py`; said when they are not).
//!
//! Every model gets random weights, random BatchNorm γ and β, and running statistics set to a
//! random batch's own (one training-mode pass, then its momentum-0.1 update undone), so a wrong
//! BatchNorm (or a wrong fold) shows in the logits while they stay of the size a trained model's
//! are (1e-4 absolute means little on logits of 1e4).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use burn::module::{ModuleMapper, Param};
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use burn::tensor::Distribution;
use kiln_models::onnx::proto::ModelProto;
use kiln_models::onnx::{OnnxOptions, export, export_proto};
use kiln_models::zoo::{ModelConfig, ModelFn, ZooModel};
use kiln_models::{ModelError, PretrainedSpec};
use prost::Message;

/// The input each preset is exported for (ImageNet stems, 224×224 and up, at 64×64 to keep the
/// test quick).
fn input_for(config: &ModelConfig) -> [usize; 3] {
    let [c, h, w] = config.default_input();
    if h >= 224 { [c, 64, 64] } else { [c, h, w] }
}

/// What one model's export writes: the cases for the Python check, and the structure seen here.
struct Exported {
    cases: Vec<serde_json::Value>,
}

struct ExportAll<'a> {
    dir: &'a Path,
    name: &'a str,
    chw: [usize; 3],
    opset: i64,
}

fn f32s<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

impl ModelFn for ExportAll<'_> {
    type Output = Exported;

    fn call<M: ZooModel>(self, model: M) -> Exported {
        let device = Device::flex();
        let [c, h, w] = self.chw;
        // A training-mode pass on an autodiff device moves BatchNorm's running statistics.
        let train_input = Tensor::<4>::random(
            [16, c, h, w],
            Distribution::Normal(0.0, 1.0),
            &device.clone().autodiff(),
        );
        let model = model.train();
        let _ = model.logits(train_input);
        let model = model.valid().map(&mut Calibrate::default());
        let paths: BTreeSet<String> = model
            .collect(None, None, false)
            .iter()
            .map(|t| t.name.clone())
            .collect();

        let mut cases = Vec::new();
        for fold_bn in [false, true] {
            for batch in [1usize, 7] {
                let x = Tensor::<4>::random([batch, c, h, w], Distribution::Normal(0.0, 1.0), &device);
                let logits = model.logits(x.clone());
                let probs = burn::tensor::activation::softmax(logits.clone(), 1);
                let stem = format!("{}-b{batch}{}", self.name, if fold_bn { "-folded" } else { "" });
                kiln_data::npy::write_f32(
                    &self.dir.join(format!("{stem}-x.npy")),
                    &[batch, c, h, w],
                    &f32s(x),
                )
                .unwrap();
                let classes = model.num_classes();
                kiln_data::npy::write_f32(
                    &self.dir.join(format!("{stem}-logits.npy")),
                    &[batch, classes],
                    &f32s(logits),
                )
                .unwrap();
                kiln_data::npy::write_f32(
                    &self.dir.join(format!("{stem}-probs.npy")),
                    &[batch, classes],
                    &f32s(probs),
                )
                .unwrap();
                // Batch 1 through a fixed-batch graph, 7 through a dynamic one.
                let options = OnnxOptions {
                    dynamic_batch: batch != 1,
                    batch: 1,
                    fold_bn,
                    opset: self.opset,
                };
                let onnx = export_proto(&model, self.chw, &options, None)
                    .unwrap_or_else(|e| panic!("{}: {e}", self.name));
                check_structure(self.name, &onnx, &options, &paths, classes);
                std::fs::write(self.dir.join(format!("{stem}.onnx")), onnx.encode_to_vec()).unwrap();
                cases.push(serde_json::json!({
                    "onnx": format!("{stem}.onnx"),
                    "input": format!("{stem}-x.npy"),
                    "logits": format!("{stem}-logits.npy"),
                    "probabilities": format!("{stem}-probs.npy"),
                }));
            }
        }
        Exported { cases }
    }
}

/// After one training pass, running = 0.9·init + 0.1·batch (Burn's momentum 0.1, from mean 0 and
/// variance 1): this sets them to the batch's statistics, and draws γ from U(0.75, 1.25) and β
/// from N(0, 0.1²).
#[derive(Default)]
struct Calibrate {
    path: Vec<String>,
}

impl ModuleMapper for Calibrate {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let leaf = self.path.last().map(String::as_str);
        param.map(|t| {
            let noise = |d: Distribution| Tensor::<D>::random(t.shape(), d, &t.device());
            match leaf {
                Some("running_mean") => t * 10.0,
                Some("running_var") => (t * 10.0 - 9.0).clamp_min(0.25),
                Some("gamma") => noise(Distribution::Uniform(0.75, 1.25)),
                Some("beta") => noise(Distribution::Normal(0.0, 0.1)),
                _ => t,
            }
        })
    }
}

/// The graph's input and outputs, its initializers named by the model's parameter paths, and no
/// BatchNorm node left when folded.
fn check_structure(
    name: &str,
    onnx: &ModelProto,
    options: &OnnxOptions,
    paths: &BTreeSet<String>,
    classes: usize,
) {
    let graph = onnx.graph.as_ref().unwrap();
    assert_eq!(onnx.opset_import[0].version(), options.opset);
    assert_eq!(onnx.producer_name(), "kiln");
    let dims = |v: &kiln_models::onnx::proto::ValueInfoProto| -> Vec<String> {
        use kiln_models::onnx::proto::{tensor_shape_proto::dimension::Value, type_proto};
        let Some(type_proto::Value::TensorType(t)) = &v.r#type.as_ref().unwrap().value else {
            panic!("not a tensor")
        };
        t.shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| match d.value.as_ref().unwrap() {
                Value::DimValue(n) => n.to_string(),
                Value::DimParam(p) => p.clone(),
            })
            .collect()
    };
    let batch = if options.dynamic_batch {
        "batch".to_string()
    } else {
        "1".to_string()
    };
    assert_eq!(graph.input.len(), 1);
    assert_eq!(graph.input[0].name(), "input");
    assert_eq!(dims(&graph.input[0])[0], batch, "{name}");
    let outputs: Vec<(&str, Vec<String>)> = graph.output.iter().map(|o| (o.name(), dims(o))).collect();
    assert_eq!(
        outputs,
        [
            ("logits", vec![batch.clone(), classes.to_string()]),
            ("probabilities", vec![batch, classes.to_string()])
        ]
    );
    let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type()).collect();
    let initializers: BTreeSet<String> = graph.initializer.iter().map(|t| t.name().to_string()).collect();
    if options.fold_bn {
        assert!(!ops.contains(&"BatchNormalization"), "{name}: {ops:?}");
        // Folded: every weight keeps its layer's name (a layer without a bias gains one); the
        // BatchNorm tensors are gone.
        let named = |i: &String| {
            paths.contains(i)
                || i.strip_suffix(".bias")
                    .is_some_and(|l| paths.contains(&format!("{l}.weight")))
        };
        assert!(initializers.iter().all(named), "{name}: {initializers:?}");
        assert!(!initializers.iter().any(|i| i.contains("running_")));
    } else {
        // Unfolded: the initializers are exactly the model's tensors, under their paths.
        assert_eq!(&initializers, paths, "{name}");
    }
    // Every node's inputs are produced before it (topological order) or are weights.
    let mut known: BTreeSet<&str> = initializers.iter().map(String::as_str).collect();
    known.insert("input");
    for n in &graph.node {
        for i in &n.input {
            assert!(
                known.contains(i.as_str()),
                "{name}: {} reads {i} before it exists",
                n.name()
            );
        }
        known.extend(n.output.iter().map(String::as_str));
    }
}

#[test]
fn every_registered_model_exports_with_its_parameter_names_and_onnxruntime_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    device.seed(25);
    let mut cases = Vec::new();
    // ViT-B/16 and B/32 (86 M and 88 M parameters, 1.4 GB of ONNX files between them) write the
    // same graph as vit_s_16 and cifar-vit, only wider: those two stand for them.
    let presets: Vec<_> = ModelConfig::presets()
        .into_iter()
        .filter(|p| !["vit_b_16", "vit_b_32"].contains(&p.name))
        .collect();
    for p in &presets {
        let chw = input_for(&p.config);
        let out = p
            .config
            .build_with(
                chw,
                5,
                &device,
                ExportAll {
                    dir: dir.path(),
                    name: p.name,
                    chw,
                    opset: 17,
                },
            )
            .unwrap();
        cases.extend(out.cases);
    }
    // Without BatchNorm (ablations): the layers keep their biases.
    let mut plain = ModelConfig::from_name("reference-cnn").unwrap();
    plain.set_batch_norm(false);
    let chw = plain.default_input();
    let name = "reference-cnn-no-bn";
    cases.extend(
        plain
            .build_with(
                chw,
                5,
                &device,
                ExportAll {
                    dir: dir.path(),
                    name,
                    chw,
                    opset: 17,
                },
            )
            .unwrap()
            .cases,
    );
    // The activations no preset uses, through an MLP: GELU before opset 20 (erf) and from it.
    use kiln_models::{Activation, MlpConfig};
    for (name, activation, opset) in [
        ("mlp-gelu", Activation::Gelu, 17),
        ("mlp-gelu-opset20", Activation::Gelu, 20),
        ("mlp-silu", Activation::Silu, 13),
        ("mlp-leaky", Activation::LeakyRelu { negative_slope: 0.2 }, 21),
    ] {
        let chw = [1, 6, 5];
        let mlp = MlpConfig::new(vec![12, 8])
            .with_input_chw(chw)
            .with_num_classes(4)
            .with_activation(activation)
            .init(&device)
            .unwrap();
        cases.extend(
            ExportAll {
                dir: dir.path(),
                name,
                chw,
                opset,
            }
            .call(mlp)
            .cases,
        );
    }
    assert_eq!(cases.len(), 4 * (presets.len() + 5));
    let manifest = dir.path().join("manifest.json");
    std::fs::write(&manifest, serde_json::to_vec(&cases).unwrap()).unwrap();
    run_onnxruntime_check(&manifest);
}

/// `scripts/check_onnx.py MANIFEST` when Python has onnx and onnxruntime; says so when not.
fn run_onnxruntime_check(manifest: &Path) {
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
    assert!(said.contains("onnxruntime agrees on"), "{said}");
}

#[test]
fn metadata_carries_the_preprocessing_and_bad_options_are_refused() {
    let device = Device::flex();
    let model = kiln_models::ResNetConfig::new(kiln_models::ResNetKind::Cifar20)
        .with_num_classes(3)
        .init(&device)
        .unwrap();
    let spec = PretrainedSpec::torchvision(
        ModelConfig::from_name("cifar-resnet20").unwrap(),
        kiln_transforms::NormalizationSpec::Cifar10,
        [3, 32, 32],
        3,
        vec!["cat".into(), "dog".into(), "ship".into()],
    );
    let bytes = export(&model, [3, 32, 32], &OnnxOptions::default(), Some(&spec)).unwrap();
    let onnx = ModelProto::decode(bytes.as_slice()).unwrap();
    let meta: std::collections::BTreeMap<&str, &str> =
        onnx.metadata_props.iter().map(|p| (p.key(), p.value())).collect();
    assert_eq!(meta["model"], "cifar-resnet20");
    assert_eq!(meta["colour_order"], "RGB");
    assert_eq!(meta["pixel_scale"], "0-1");
    assert_eq!(meta["input_chw"], "[3, 32, 32]");
    assert_eq!(meta["class_names"], r#"["cat","dog","ship"]"#);
    // torchvision's CIFAR-10 statistics, as kiln's preset lists them.
    let mean: Vec<f32> = serde_json::from_str(meta["mean"]).unwrap();
    assert_eq!(mean, kiln_transforms::Normalization::cifar10().mean);
    let back: PretrainedSpec = serde_json::from_str(meta["kiln.spec"]).unwrap();
    assert_eq!(back, spec);
    assert!(
        meta["eval_transforms"].contains("resize"),
        "{}",
        meta["eval_transforms"]
    );

    let refuse = |options: OnnxOptions, chw: [usize; 3]| export(&model, chw, &options, None).unwrap_err();
    let err = refuse(
        OnnxOptions {
            opset: 9,
            ..OnnxOptions::default()
        },
        [3, 32, 32],
    );
    assert!(
        matches!(err, ModelError::InvalidConfig { field: "opset", .. }),
        "{err}"
    );
    let err = refuse(
        OnnxOptions {
            batch: 0,
            ..OnnxOptions::default()
        },
        [3, 32, 32],
    );
    assert!(err.to_string().contains("batch"), "{err}");
    let err = refuse(OnnxOptions::default(), [1, 32, 32]);
    assert!(matches!(err, ModelError::InputShape { .. }), "{err}");
}

#[test]
fn gelu_and_silu_are_written_for_every_opset() {
    use kiln_models::Activation;
    use kiln_models::onnx::{OnnxGraph, OnnxLayer};
    for (opset, want) in [
        (
            17,
            vec![
                "Constant", "Constant", "Constant", "Div", "Erf", "Add", "Mul", "Mul",
            ],
        ),
        (20, vec!["Gelu"]),
    ] {
        let mut g = OnnxGraph::new(&OnnxOptions {
            opset,
            ..OnnxOptions::default()
        });
        let out = Activation::Gelu.onnx(&mut g, "act", "input").unwrap();
        assert_eq!(out, "act.gelu");
        let ops: Vec<&str> = g.nodes().iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, want, "opset {opset}");
        let out = Activation::Silu.onnx(&mut g, "act", &out).unwrap();
        assert_eq!(out, "act.silu");
        let last: Vec<&str> = g.nodes().iter().rev().take(2).map(|n| n.op_type()).collect();
        assert_eq!(last, ["Mul", "Sigmoid"]);
        assert_eq!(
            Activation::Identity.onnx(&mut g, "act", &out).unwrap(),
            out,
            "no node"
        );
    }
}

#[test]
fn a_layer_without_an_onnx_form_is_named() {
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::pool::AdaptiveAvgPool2dConfig;
    use kiln_models::onnx::{OnnxGraph, OnnxLayer};
    let device = Device::flex();
    let mut g = OnnxGraph::new(&OnnxOptions::default());
    let same = Conv2dConfig::new([3, 4], [3, 3])
        .with_padding(PaddingConfig2d::Same)
        .init(&device);
    let err = same.onnx(&mut g, "stem.conv", "input").unwrap_err().to_string();
    assert!(
        err.starts_with("cannot export stem.conv to ONNX: ") && err.contains("Same"),
        "{err}"
    );
    let pool = AdaptiveAvgPool2dConfig::new([2, 2]).init();
    let err = pool.onnx(&mut g, "head.pool", "input").unwrap_err().to_string();
    assert!(err.contains("head.pool") && err.contains("[2, 2]"), "{err}");
    assert!(g.nodes().is_empty(), "nothing half-written");
}

/// End to end: torchvision's reduced MobileNetV3, EfficientNet, ConvNeXt and ViT fixtures
/// (`tests/fixtures/{mobilenet_v3_small_w050, efficientnet_b0_w035_d050, convnext_d1121_w16,
/// vit_p8_l2_h4_d32}`,
/// see `torchvision_import.rs`: squeeze-excitation, hard swish and SiLU, depthwise convolutions,
/// LayerNorm, GELU, layer scale, multi-head attention, class token, logits of a real size) imported into kiln and exported to ONNX
/// give PyTorch's own logits in ONNX Runtime, folded and not, at opset 13 (no `HardSwish` operator
/// yet; 17 for `LayerNormalization`) and 21.
#[test]
fn imported_torchvision_mobilenet_efficientnet_convnext_and_vit_run_in_onnxruntime_with_pytorchs_logits() {
    struct ImportAndExport<'a> {
        fixture: &'a Path,
        dir: &'a Path,
        name: &'a str,
    }
    impl ModelFn for ImportAndExport<'_> {
        type Output = Vec<serde_json::Value>;
        fn call<M: ZooModel>(self, model: M) -> Vec<serde_json::Value> {
            let model =
                kiln_models::import::load_torchvision(model, &self.fixture.join("weights.safetensors"))
                    .unwrap();
            let mut cases = Vec::new();
            // LayerNormalization (ConvNeXt, ViT) needs opset 17.
            let first_norm = match self.name {
                n if n.starts_with("convnext") => Some("stem_norm"),
                n if n.starts_with("vit") => Some("blocks.0.ln_1"),
                _ => None,
            };
            let low = if let Some(first_norm) = first_norm {
                let before = OnnxOptions {
                    opset: 16,
                    ..OnnxOptions::default()
                };
                let err = export_proto(&model, [3, 64, 64], &before, None)
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(first_norm) && err.contains("opset 17"), "{err}");
                17
            } else {
                13
            };
            for (opset, fold_bn) in [(low, false), (low, true), (21, false), (21, true)] {
                let options = OnnxOptions {
                    opset,
                    dynamic_batch: true,
                    batch: 1,
                    fold_bn,
                };
                let onnx = export_proto(&model, [3, 64, 64], &options, None).unwrap();
                let ops: BTreeSet<&str> = onnx
                    .graph
                    .as_ref()
                    .unwrap()
                    .node
                    .iter()
                    .map(|n| n.op_type())
                    .collect();
                let pooled = if self.name.starts_with("vit") {
                    ["Softmax", "MatMul", "Gather", "Expand"]
                } else {
                    ["GlobalAveragePool", "Mul", "Add", "Conv"]
                };
                for op in pooled {
                    assert!(ops.contains(op), "{}: {op} in {ops:?}", self.name);
                }
                let file = format!("{}-{opset}-{fold_bn}.onnx", self.name);
                std::fs::write(self.dir.join(&file), onnx.encode_to_vec()).unwrap();
                cases.push(serde_json::json!({
                    "onnx": file,
                    "input": format!("{}-x.npy", self.name),
                    "logits": format!("{}-logits.npy", self.name),
                }));
            }
            cases
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let mut cases = Vec::new();
    for (name, config) in [
        (
            "mobilenet_v3_small_w050",
            r#"{"name":"mobilenet-v3","variant":"small","width_mult":0.5}"#,
        ),
        (
            "efficientnet_b0_w035_d050",
            r#"{"name":"efficientnet","variant":"b0","width_mult":0.35,"depth_mult":0.5}"#,
        ),
        (
            "convnext_d1121_w16",
            r#"{"name":"convnext","variant":"tiny","depths":[1,1,2,1],"widths":[16,32,48,64]}"#,
        ),
        (
            "vit_p8_l2_h4_d32",
            r#"{"name":"vit","variant":"b16","patch_size":8,"num_layers":2,"num_heads":4,"hidden_dim":32,"mlp_dim":48}"#,
        ),
    ] {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let read = |file: &str| -> Vec<f32> {
            std::fs::read(fixture.join(file))
                .unwrap()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        let x = dir.path().join(format!("{name}-x.npy"));
        kiln_data::npy::write_f32(&x, &[2, 3, 64, 64], &read("input.f32")).unwrap();
        let logits = dir.path().join(format!("{name}-logits.npy"));
        kiln_data::npy::write_f32(&logits, &[2, 10], &read("logits.f32")).unwrap();
        let config: ModelConfig = serde_json::from_str(config).unwrap();
        let run = ImportAndExport {
            fixture: &fixture,
            dir: dir.path(),
            name,
        };
        cases.extend(config.build_with([3, 64, 64], 10, &device, run).unwrap());
    }
    let manifest = dir.path().join("manifest.json");
    std::fs::write(&manifest, serde_json::to_vec(&cases).unwrap()).unwrap();
    run_onnxruntime_check(&manifest);
}
