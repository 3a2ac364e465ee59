//! Vision Transformer: torchvision's `VisionTransformer` (Dosovitskiy et al. 2021) — `vit_b_16`,
//! `vit_b_32`, a ViT-S/16 and a small patch-4 ViT for 28×28 / 32×32 images — with torchvision's
//! parameter names, defaults and initialisation.
//!
//! The image is cut into `patch × patch` patches by a stride-`patch` convolution (`conv_proj`);
//! a learned class token is put in front of the patch tokens and a learned position embedding
//! added; then `num_layers` pre-norm encoder blocks, each
//! `x + Attention(LN(x))` followed by `x + MLP(LN(x))`, the attention equal to
//! `torch.nn.MultiheadAttention` (one `[3d, d]` input projection, `heads` heads of `d / heads`,
//! softmax of `q·kᵀ/√(d/heads)`, an output projection) and the MLP `Linear(d → m) → GELU →
//! Linear(m → d)`; a final LayerNorm (ε 1e-6, as every LayerNorm here) and a linear head on the
//! class token.
//!
//! Initialisation as torchvision: patch convolution N(0, 1/fan_in) (torchvision's truncation at
//! ±2 never binds for patches of 2 or more), class token 0, position embedding N(0, 0.02²),
//! attention input projection Xavier-uniform, output projection PyTorch's default, their biases
//! 0; MLP weights Xavier-uniform with N(0, 1e-12) biases; the head **zero** (weights and bias).
//! Dropout (after the position embedding, the attention and in the MLP) and attention dropout
//! default to 0 as in torchvision.
//!
//! The position embedding fixes the image size: the model is built for one `H×W` (multiples of
//! the patch) and refuses others, naming the size it takes.
//!
//! ```
//! use burn::prelude::*;
//! use kiln_models::{Classifier, VitConfig, VitKind};
//!
//! let device = Device::flex();
//! let model = VitConfig::new(VitKind::Tiny)
//!     .with_image_size([28, 28])
//!     .with_num_layers(Some(2))
//!     .with_num_classes(3)
//!     .init(&device)?;
//! assert_eq!(model.logits(Tensor::<4>::zeros([2, 3, 28, 28], &device)).dims(), [2, 3]);
//! assert!(model.check_input(&[2, 3, 32, 32]).is_err(), "built for 28x28");
//! # Ok::<(), kiln_models::ModelError>(())
//! ```

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use crate::blocks::Activation;
use crate::init::InitScheme;
use crate::onnx::{OnnxGraph, OnnxLayer};
use crate::zoo::{Architecture, Preset, ZooModel};
use crate::{Classifier, FineTune, ModelError};

/// torchvision's LayerNorm ε for the ViT.
const LN_EPS: f64 = 1e-6;

/// Which ViT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VitKind {
    /// `vit_b_16`: patch 16, 12 layers, 12 heads, width 768, MLP 3072.
    #[serde(rename = "b16")]
    B16,
    /// `vit_b_32`: patch 32, otherwise as B/16.
    #[serde(rename = "b32")]
    B32,
    /// ViT-S/16 (timm's `vit_small_patch16_224` shape): patch 16, 12 layers, 6 heads, width
    /// 384, MLP 1536.
    #[serde(rename = "s16")]
    S16,
    /// A small ViT for 28×28 / 32×32 images: patch 4, 6 layers, 3 heads, width 192, MLP 384.
    #[serde(rename = "tiny")]
    Tiny,
}

/// `(patch, layers, heads, width, MLP width)` of a ViT.
type VitPlan = (usize, usize, usize, usize, usize);

impl VitKind {
    fn plan(self) -> VitPlan {
        match self {
            VitKind::B16 => (16, 12, 12, 768, 3072),
            VitKind::B32 => (32, 12, 12, 768, 3072),
            VitKind::S16 => (16, 12, 6, 384, 1536),
            VitKind::Tiny => (4, 6, 3, 192, 384),
        }
    }

    /// The registry name.
    pub fn id(self) -> &'static str {
        match self {
            VitKind::B16 => "vit_b_16",
            VitKind::B32 => "vit_b_32",
            VitKind::S16 => "vit_s_16",
            VitKind::Tiny => "cifar-vit",
        }
    }

    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            VitKind::B16 => "ViT-B/16",
            VitKind::B32 => "ViT-B/32",
            VitKind::S16 => "ViT-S/16",
            VitKind::Tiny => "ViT-Ti/4",
        }
    }

    /// The image size the variant is made for.
    fn image_size(self) -> [usize; 2] {
        match self {
            VitKind::Tiny => [32, 32],
            _ => [224, 224],
        }
    }
}

/// Configuration of [`VisionTransformer`].
#[derive(Config, Debug, PartialEq)]
pub struct VitConfig {
    /// Which ViT.
    pub kind: VitKind,
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Input channels (torchvision's are 3).
    #[config(default = 3)]
    pub in_channels: usize,
    /// `[H, W]` of the images: the position embedding has one entry per patch of it.
    #[config(default = "[224, 224]")]
    pub image_size: [usize; 2],
    /// Patch size in place of the variant's.
    #[config(default = "None")]
    pub patch_size: Option<usize>,
    /// Encoder blocks in place of the variant's.
    #[config(default = "None")]
    pub num_layers: Option<usize>,
    /// Attention heads in place of the variant's.
    #[config(default = "None")]
    pub num_heads: Option<usize>,
    /// Token width in place of the variant's (a multiple of the heads).
    #[config(default = "None")]
    pub hidden_dim: Option<usize>,
    /// MLP width in place of the variant's.
    #[config(default = "None")]
    pub mlp_dim: Option<usize>,
    /// Dropout after the position embedding, the attention and the MLP layers.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Dropout on the attention weights.
    #[config(default = 0.0)]
    pub attention_dropout: f64,
}

/// One pre-norm encoder block; see the [module docs](self).
#[derive(Module, Debug)]
pub struct EncoderBlock {
    ln_1: LayerNorm,
    in_proj: Linear,
    out_proj: Linear,
    ln_2: LayerNorm,
    mlp_1: Linear,
    mlp_2: Linear,
    dropout: Dropout,
    attention_dropout: Dropout,
    #[module(skip)]
    heads: usize,
}

impl EncoderBlock {
    /// `[N·S, D]` tokens (N images of S tokens) → the same.
    fn forward(&self, x: Tensor<2>, n: usize, s: usize) -> Tensor<2> {
        let y = self.attention(crate::kernels::layer_norm(&self.ln_1, LN_EPS, x.clone()), n, s);
        let x = x + self.dropout.forward(y);
        let y = crate::kernels::layer_norm(&self.ln_2, LN_EPS, x.clone());
        let y = Activation::Gelu.apply(self.mlp_1.forward(y));
        let y = self.mlp_2.forward(self.dropout.forward(y));
        x + self.dropout.forward(y)
    }

    /// `nn.MultiheadAttention(x, x, x)` on `[N·S, D]` tokens.
    fn attention(&self, x: Tensor<2>, n: usize, s: usize) -> Tensor<2> {
        let d = x.dims()[1];
        let heads = self.heads;
        // [N·S, 3D]: per token q, k and v, each `heads` runs of D/heads.
        let qkv = self.in_proj.forward(x).reshape([n, s, 3 * d]);
        let o = if self.attention_dropout.prob == 0.0 || !qkv.device().is_autodiff() {
            crate::kernels::attention(qkv, heads)
        } else {
            // Dropout on the attention weights: the composition, heads first.
            let hd = d / heads;
            let qkv = qkv.reshape([n, s, 3 * heads, hd]).swap_dims(1, 2);
            let part = |i: usize| qkv.clone().narrow(1, i * heads, heads);
            let scores = part(0)
                .mul_scalar(1.0 / (hd as f64).sqrt())
                .matmul(part(1).swap_dims(2, 3));
            let attn = self.attention_dropout.forward(softmax(scores, 3));
            attn.matmul(part(2)).swap_dims(1, 2).reshape([n, s, d])
        };
        self.out_proj.forward(o.reshape([n * s, d]))
    }
}

/// A Vision Transformer; see the [module docs](self).
#[derive(Module, Debug)]
pub struct VisionTransformer {
    conv_proj: Conv2d,
    class_token: Param<Tensor<3>>,
    pos_embedding: Param<Tensor<3>>,
    dropout: Dropout,
    blocks: Vec<EncoderBlock>,
    ln: LayerNorm,
    pub(crate) head: Linear,
    #[module(skip)]
    kind: VitKind,
    #[module(skip)]
    in_channels: usize,
    #[module(skip)]
    image_size: [usize; 2],
    #[module(skip)]
    patch: usize,
}

impl VitConfig {
    /// Checks the config and builds the model.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] for fewer than two classes, no input channels, a zero size,
    /// an image that is not a whole number of patches, a width that the heads do not divide, or
    /// a dropout rate outside [0, 1).
    pub fn init(&self, device: &Device) -> Result<VisionTransformer, ModelError> {
        crate::error::check_num_classes(self.num_classes)?;
        let (patch, layers, heads, hidden, mlp) = self.kind.plan();
        let patch = self.patch_size.unwrap_or(patch);
        let layers = self.num_layers.unwrap_or(layers);
        let heads = self.num_heads.unwrap_or(heads);
        let hidden = self.hidden_dim.unwrap_or(hidden);
        let mlp = self.mlp_dim.unwrap_or(mlp);
        let invalid = |field, value: String, reason| ModelError::InvalidConfig { field, value, reason };
        if self.in_channels == 0 {
            return Err(invalid("in_channels", "0".into(), "must be at least 1"));
        }
        if [patch, layers, heads, hidden, mlp].contains(&0) {
            return Err(invalid(
                "patch_size/num_layers/num_heads/hidden_dim/mlp_dim",
                format!("{patch}/{layers}/{heads}/{hidden}/{mlp}"),
                "each must be at least 1",
            ));
        }
        if !hidden.is_multiple_of(heads) {
            return Err(invalid(
                "hidden_dim",
                format!("{hidden} with {heads} heads"),
                "must be a multiple of num_heads",
            ));
        }
        let [h, w] = self.image_size;
        if h == 0 || w == 0 || !h.is_multiple_of(patch) || !w.is_multiple_of(patch) {
            return Err(invalid(
                "image_size",
                format!("{h}x{w} with patch {patch}"),
                "must be a whole number of patches (resize the images, or pick a patch size that divides them: cifar-vit's 4 takes 28x28 and 32x32)",
            ));
        }
        for (field, p) in [
            ("dropout", self.dropout),
            ("attention_dropout", self.attention_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(invalid(field, p.to_string(), "must be in [0, 1)"));
            }
        }
        let seq = (h / patch) * (w / patch) + 1;
        let fan_in = self.in_channels * patch * patch;
        let mut conv_proj = Conv2dConfig::new([self.in_channels, hidden], [patch, patch])
            .with_stride([patch, patch])
            .with_initializer(Initializer::Normal {
                mean: 0.0,
                std: (1.0 / fan_in as f64).sqrt(),
            })
            .init(device);
        conv_proj.bias = Some(Initializer::Zeros.init([hidden], device));
        let linear = |d_in: usize, d_out: usize, init: Initializer, bias: Initializer| {
            let mut l = LinearConfig::new(d_in, d_out).with_initializer(init).init(device);
            l.bias = Some(bias.init([d_out], device));
            l
        };
        let xavier = Initializer::XavierUniform { gain: 1.0 };
        let tiny = Initializer::Normal { mean: 0.0, std: 1e-6 };
        let norm = || LayerNormConfig::new(hidden).with_epsilon(LN_EPS).init(device);
        let blocks = (0..layers)
            .map(|_| EncoderBlock {
                ln_1: norm(),
                in_proj: linear(hidden, 3 * hidden, xavier.clone(), Initializer::Zeros),
                // PyTorch's default nn.Linear weights (Burn's default initializer is the same
                // U(±1/√fan_in)); nn.MultiheadAttention zeroes the bias.
                out_proj: linear(
                    hidden,
                    hidden,
                    LinearConfig::new(1, 1).initializer,
                    Initializer::Zeros,
                ),
                ln_2: norm(),
                mlp_1: linear(hidden, mlp, xavier.clone(), tiny.clone()),
                mlp_2: linear(mlp, hidden, xavier.clone(), tiny.clone()),
                dropout: DropoutConfig::new(self.dropout).init(),
                attention_dropout: DropoutConfig::new(self.attention_dropout).init(),
                heads,
            })
            .collect();
        Ok(VisionTransformer {
            conv_proj,
            class_token: Initializer::Zeros.init([1, 1, hidden], device),
            pos_embedding: Initializer::Normal { mean: 0.0, std: 0.02 }.init([1, seq, hidden], device),
            dropout: DropoutConfig::new(self.dropout).init(),
            blocks,
            ln: norm(),
            head: linear(hidden, self.num_classes, Initializer::Zeros, Initializer::Zeros),
            kind: self.kind,
            in_channels: self.in_channels,
            image_size: self.image_size,
            patch,
        })
    }
}

impl VisionTransformer {
    /// `[N, C, H, W]` → `[N, classes]` logits.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let [n, _, _, _] = x.dims();
        let x = crate::kernels::conv2d(&self.conv_proj, x);
        let [_, d, gh, gw] = x.dims();
        let s = gh * gw + 1;
        let tokens = x.reshape([n, d, gh * gw]).swap_dims(1, 2);
        let cls = self.class_token.val().expand([n, 1, d]);
        let x = Tensor::cat(vec![cls, tokens], 1) + self.pos_embedding.val();
        let mut x = self.dropout.forward(x).reshape([n * s, d]);
        for b in &self.blocks {
            x = b.forward(x, n, s);
        }
        // Only the class token reaches the head: the final LayerNorm is per token.
        let cls: Tensor<2> = x.reshape([n, s, d]).narrow(1, 0, 1).reshape([n, d]);
        self.head
            .forward(crate::kernels::layer_norm(&self.ln, LN_EPS, cls))
    }

    /// Which ViT this is.
    pub fn kind(&self) -> VitKind {
        self.kind
    }

    /// `(patch, tokens, width, heads, MLP width)`.
    fn shape(&self) -> (usize, usize, usize, usize, usize) {
        let [h, w] = self.image_size;
        let d = crate::summary::lazy_dims(&self.class_token)[2];
        let (heads, mlp) = self
            .blocks
            .first()
            .map(|b| (b.heads, crate::summary::lazy_dims(&b.mlp_1.weight)[1]))
            .unwrap_or((1, 0));
        (self.patch, (h / self.patch) * (w / self.patch) + 1, d, heads, mlp)
    }

    /// Per-layer output shapes, parameters and MACs for an input of `[C, H, W]` (the attention's
    /// two matrix products counted, as torchvision's model cards do).
    pub fn summary(&self, input: [usize; 3]) -> crate::Summary {
        let (p, s, d, heads, mlp) = self.shape();
        let patches = s - 1;
        let mut rows = vec![crate::Row {
            layer: format!("Conv{p}x{p}(stride {p}, bias) → {patches} patch tokens"),
            output: vec![patches, d],
            params: self.conv_proj.num_params(),
            macs: (input[0] * p * p * d * patches) as u64,
        }];
        rows.push(crate::Row {
            layer: "class token + position embedding".into(),
            output: vec![s, d],
            params: self.class_token.num_params() + self.pos_embedding.num_params(),
            macs: 0,
        });
        for (i, b) in self.blocks.iter().enumerate() {
            rows.push(crate::Row {
                layer: format!("block {i}: LayerNorm → MultiheadAttention({heads} heads) (+ input)"),
                output: vec![s, d],
                params: b.ln_1.num_params() + b.in_proj.num_params() + b.out_proj.num_params(),
                macs: (4 * s * d * d + 2 * s * s * d) as u64,
            });
            rows.push(crate::Row {
                layer: format!("block {i}: LayerNorm → Linear({d}→{mlp}) → GELU → Linear (+ input)"),
                output: vec![s, d],
                params: b.ln_2.num_params() + b.mlp_1.num_params() + b.mlp_2.num_params(),
                macs: (2 * s * d * mlp) as u64,
            });
        }
        rows.push(crate::Row {
            layer: "LayerNorm (class token)".into(),
            output: vec![d],
            params: self.ln.num_params(),
            macs: 0,
        });
        rows.push(crate::summary::linear_row(&self.head, |i, o| {
            format!("Linear({i}→{o}, bias)")
        }));
        crate::Summary {
            model: self.kind.name().to_string(),
            input,
            rows,
        }
    }
}

impl Classifier for VisionTransformer {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }

    fn check_input(&self, dims: &[usize]) -> Result<(), ModelError> {
        // The position embedding has one entry per patch of the size the model was built for.
        let [h, w] = self.image_size;
        if dims.len() == 4 && dims[0] > 0 && dims[1..] == [self.in_channels, h, w] {
            Ok(())
        } else {
            Err(ModelError::InputShape {
                model: self.kind.name(),
                expected_chw: [self.in_channels, h, w],
                found: dims.to_vec(),
            })
        }
    }

    fn summary(&self, input_chw: [usize; 3]) -> Option<crate::Summary> {
        Some(VisionTransformer::summary(self, input_chw))
    }
}

impl FineTune for VisionTransformer {
    const HEAD_PATTERN: &'static str = r"^head\.";

    fn head(&self) -> &Linear {
        &self.head
    }

    fn head_mut(&mut self) -> &mut Linear {
        &mut self.head
    }

    /// timm's grouping of its ViT: the patch projection, class token and position embedding;
    /// one layer per block; the final LayerNorm with the head.
    fn lr_layers(&self) -> Option<Vec<Vec<String>>> {
        let mut layers = vec![vec![
            r"^conv_proj\.".to_string(),
            r"^class_token$".to_string(),
            r"^pos_embedding$".to_string(),
        ]];
        layers.extend((0..self.blocks.len()).map(|i| vec![format!(r"^blocks\.{i}\.")]));
        layers.push(vec![r"^ln\.".to_string(), r"^head\.".to_string()]);
        Some(layers)
    }
}

impl ZooModel for VisionTransformer {
    /// `(torchvision prefix, kiln prefix)` pairs: `conv_proj`, `class_token`,
    /// `encoder.pos_embedding`, block `i` at `encoder.layers.encoder_layer_{i}` (`ln_1`,
    /// `self_attention.in_proj_{weight,bias}` and `.out_proj`, `ln_2`, `mlp.0` and `mlp.3`),
    /// `encoder.ln`, `heads.head`.
    fn torchvision_prefixes(&self) -> Option<Vec<(String, String)>> {
        let mut pairs = vec![
            ("conv_proj.".to_string(), "conv_proj.".to_string()),
            ("class_token".to_string(), "class_token".to_string()),
            ("encoder.pos_embedding".to_string(), "pos_embedding".to_string()),
        ];
        for i in 0..self.blocks.len() {
            let tv = format!("encoder.layers.encoder_layer_{i}");
            for (part, kiln) in [
                ("ln_1.", "ln_1."),
                ("self_attention.in_proj_weight", "in_proj.weight"),
                ("self_attention.in_proj_bias", "in_proj.bias"),
                ("self_attention.out_proj.", "out_proj."),
                ("ln_2.", "ln_2."),
                ("mlp.0.", "mlp_1."),
                ("mlp.3.", "mlp_2."),
            ] {
                pairs.push((format!("{tv}.{part}"), format!("blocks.{i}.{kiln}")));
            }
        }
        pairs.push(("encoder.ln.".into(), "ln.".into()));
        pairs.push(("heads.head.".into(), "head.".into()));
        Some(pairs)
    }

    fn onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String, ModelError> {
        let (_, s, d, heads, _) = self.shape();
        let hd = d / heads;
        let shape = |g: &mut OnnxGraph, name: &str, dims: &[i64]| g.int64s(name, &[dims.len()], dims);
        // Patches: [N, D, gh, gw] → [N, P, D] (0 in a Reshape shape keeps the batch).
        let x = self.conv_proj.onnx(g, "conv_proj", x)?;
        let flat = shape(g, "patches.shape", &[0, d as i64, -1]);
        let x = g.node("Reshape", "patches", &[&x, &flat], Vec::new());
        let tokens = crate::onnx::transpose(g, "patches.tokens", &x, &[0, 2, 1]);
        // The class token expanded to [N, 1, D]: the batch read off the tokens' shape.
        let cls = g.weight(
            "class_token",
            &[1, 1, d],
            crate::onnx::param_values(&self.class_token, "class_token")?,
        );
        let tshape = g.node("Shape", "class_token.batch_shape", &[&tokens], Vec::new());
        let zero = g.int64s("class_token.batch_index", &[1], &[0]);
        let batch = g.node(
            "Gather",
            "class_token.batch",
            &[&tshape, &zero],
            vec![crate::onnx::int("axis", 0)],
        );
        let ones = shape(g, "class_token.ones", &[1, 1]);
        let target = g.node(
            "Concat",
            "class_token.shape",
            &[&batch, &ones],
            vec![crate::onnx::int("axis", 0)],
        );
        let cls = g.node("Expand", "class_token.expand", &[&cls, &target], Vec::new());
        let x = g.node(
            "Concat",
            "tokens",
            &[&cls, &tokens],
            vec![crate::onnx::int("axis", 1)],
        );
        let pos = g.weight(
            "pos_embedding",
            &[1, s, d],
            crate::onnx::param_values(&self.pos_embedding, "pos_embedding")?,
        );
        let mut x = g.node("Add", "pos_embedding.add", &[&x, &pos], Vec::new());
        let scale = g.scalar("attention.scale", 1.0 / (hd as f32).sqrt());
        for (i, b) in self.blocks.iter().enumerate() {
            let scope = format!("blocks.{i}");
            let y = crate::onnx::layer_norm(g, &format!("{scope}.ln_1"), &b.ln_1, LN_EPS, &x)?;
            let qkv = crate::onnx::linear_nd(g, &format!("{scope}.in_proj"), &b.in_proj, &y)?;
            let split = shape(
                g,
                &format!("{scope}.qkv.shape"),
                &[0, s as i64, 3, heads as i64, hd as i64],
            );
            let qkv = g.node("Reshape", &format!("{scope}.qkv"), &[&qkv, &split], Vec::new());
            // [3, N, heads, S, hd]; q, k, v by index.
            let qkv = crate::onnx::transpose(g, &format!("{scope}.qkv.heads"), &qkv, &[2, 0, 3, 1, 4]);
            let mut parts = Vec::new();
            for (j, name) in ["q", "k", "v"].into_iter().enumerate() {
                let idx = g.int64s(&format!("{scope}.{name}.index"), &[], &[j as i64]);
                parts.push(g.node(
                    "Gather",
                    &format!("{scope}.{name}"),
                    &[&qkv, &idx],
                    vec![crate::onnx::int("axis", 0)],
                ));
            }
            let kt = crate::onnx::transpose(g, &format!("{scope}.k.t"), &parts[1], &[0, 1, 3, 2]);
            let scores = g.node(
                "MatMul",
                &format!("{scope}.scores"),
                &[&parts[0], &kt],
                Vec::new(),
            );
            let scores = g.node(
                "Mul",
                &format!("{scope}.scores.scaled"),
                &[&scores, &scale],
                Vec::new(),
            );
            let attn = g.node(
                "Softmax",
                &format!("{scope}.softmax"),
                &[&scores],
                vec![crate::onnx::int("axis", -1)],
            );
            let o = g.node(
                "MatMul",
                &format!("{scope}.attention"),
                &[&attn, &parts[2]],
                Vec::new(),
            );
            let o = crate::onnx::transpose(g, &format!("{scope}.attention.tokens"), &o, &[0, 2, 1, 3]);
            let merge = shape(g, &format!("{scope}.attention.shape"), &[0, s as i64, d as i64]);
            let o = g.node(
                "Reshape",
                &format!("{scope}.attention.merged"),
                &[&o, &merge],
                Vec::new(),
            );
            let o = crate::onnx::linear_nd(g, &format!("{scope}.out_proj"), &b.out_proj, &o)?;
            x = g.node("Add", &format!("{scope}.attention.add"), &[&o, &x], Vec::new());
            let y = crate::onnx::layer_norm(g, &format!("{scope}.ln_2"), &b.ln_2, LN_EPS, &x)?;
            let y = crate::onnx::linear_nd(g, &format!("{scope}.mlp_1"), &b.mlp_1, &y)?;
            let y = Activation::Gelu.onnx(g, &format!("{scope}.mlp_1"), &y)?;
            let y = crate::onnx::linear_nd(g, &format!("{scope}.mlp_2"), &b.mlp_2, &y)?;
            x = g.node("Add", &format!("{scope}.mlp.add"), &[&y, &x], Vec::new());
        }
        let first = g.int64s("class_token.index", &[], &[0]);
        let x = g.node(
            "Gather",
            "class_token.out",
            &[&x, &first],
            vec![crate::onnx::int("axis", 1)],
        );
        let x = crate::onnx::layer_norm(g, "ln", &self.ln, LN_EPS, &x)?;
        self.head.onnx(g, "head", &x)
    }
}

/// `[model] name = "vit"`: a Vision Transformer, registered in [`crate::zoo`]. The image size
/// is the data's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitArch {
    /// `b16`, `b32`, `s16` or `tiny`.
    pub variant: VitKind,
    /// Patch size in place of the variant's.
    #[serde(default)]
    pub patch_size: Option<usize>,
    /// Encoder blocks in place of the variant's.
    #[serde(default)]
    pub num_layers: Option<usize>,
    /// Attention heads in place of the variant's.
    #[serde(default)]
    pub num_heads: Option<usize>,
    /// Token width in place of the variant's.
    #[serde(default)]
    pub hidden_dim: Option<usize>,
    /// MLP width in place of the variant's.
    #[serde(default)]
    pub mlp_dim: Option<usize>,
    /// Dropout after the position embedding, the attention and the MLP layers (default 0).
    #[serde(default)]
    pub dropout: f64,
    /// Dropout on the attention weights (default 0).
    #[serde(default)]
    pub attention_dropout: f64,
    /// The ViT normalises with LayerNorm: BatchNorm cannot be switched on (an error if `true`).
    #[serde(default, skip_serializing)]
    pub batch_norm: bool,
    /// The ViT starts as torchvision does; another scheme is an error.
    #[serde(default, skip_serializing)]
    pub init: Option<InitScheme>,
}

impl VitArch {
    fn of(variant: VitKind) -> Self {
        VitArch {
            variant,
            patch_size: None,
            num_layers: None,
            num_heads: None,
            hidden_dim: None,
            mlp_dim: None,
            dropout: 0.0,
            attention_dropout: 0.0,
            batch_norm: false,
            init: None,
        }
    }
}

impl Architecture for VitArch {
    type Model = VisionTransformer;

    fn presets() -> Vec<Preset<Self>> {
        vec![
            Preset {
                name: "vit_b_16",
                about: "torchvision's ViT-B/16 (torchvision weights import)",
                config: Self::of(VitKind::B16),
            },
            Preset {
                name: "vit_b_32",
                about: "torchvision's ViT-B/32",
                config: Self::of(VitKind::B32),
            },
            Preset {
                name: "vit_s_16",
                about: "ViT-S/16 (12 layers, 6 heads, width 384) in torchvision's layout",
                config: Self::of(VitKind::S16),
            },
            Preset {
                name: "cifar-vit",
                about: "a small ViT for 28x28 / 32x32 inputs (patch 4, 6 layers, 3 heads, width 192)",
                config: Self::of(VitKind::Tiny),
            },
        ]
    }

    fn build(
        &self,
        [c, h, w]: [usize; 3],
        num_classes: usize,
        device: &Device,
    ) -> Result<VisionTransformer, ModelError> {
        crate::zoo::refuse_batch_norm_and_init(
            self.batch_norm,
            self.init,
            [
                "the ViT normalises with LayerNorm and has no BatchNorm to switch on",
                "the ViT starts as torchvision does (see docs/models.md)",
            ],
        )?;
        VitConfig::new(self.variant)
            .with_in_channels(c)
            .with_image_size([h, w])
            .with_num_classes(num_classes)
            .with_patch_size(self.patch_size)
            .with_num_layers(self.num_layers)
            .with_num_heads(self.num_heads)
            .with_hidden_dim(self.hidden_dim)
            .with_mlp_dim(self.mlp_dim)
            .with_dropout(self.dropout)
            .with_attention_dropout(self.attention_dropout)
            .init(device)
    }

    fn id(&self) -> String {
        self.variant.id().to_string()
    }

    fn describe(&self, [c, h, w]: [usize; 3], num_classes: usize) -> String {
        let (p, l, heads, d, m) = self.variant.plan();
        let (p, l) = (self.patch_size.unwrap_or(p), self.num_layers.unwrap_or(l));
        let (heads, d, m) = (
            self.num_heads.unwrap_or(heads),
            self.hidden_dim.unwrap_or(d),
            self.mlp_dim.unwrap_or(m),
        );
        format!(
            "{}({c}x{h}x{w} -> {num_classes} classes, patch {p}, {l} layers, {heads} heads, width {d}, MLP {m})",
            self.variant.name()
        )
    }

    fn default_input(&self) -> [usize; 3] {
        let [h, w] = self.variant.image_size();
        [3, h, w]
    }

    fn batch_norm_mut(&mut self) -> &mut bool {
        &mut self.batch_norm
    }

    fn init_mut(&mut self) -> &mut Option<InitScheme> {
        &mut self.init
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_and_macs_equal_torchvision() {
        // torchvision's model cards: vit_b_16 86,567,656 parameters, 17.564 GFLOPS ("_ops",
        // multiply-adds) at 224x224; vit_b_32 88,224,232 and 4.409. ViT-S/16: timm's
        // vit_small_patch16_224 has 22,050,664 (sum(p.numel() for p in m.parameters())).
        let d = Device::flex();
        for (kind, params, gmacs) in [
            (VitKind::B16, 86_567_656, 17.564),
            (VitKind::B32, 88_224_232, 4.409),
            (VitKind::S16, 22_050_664, 4.6),
        ] {
            let m = VitConfig::new(kind).with_num_classes(1000).init(&d).unwrap();
            crate::summary::assert_model_card(&format!("{kind:?}"), &m, [3, 224, 224], params, gmacs);
        }
    }

    #[test]
    fn the_image_size_is_fixed_and_bad_configs_are_refused() {
        let d = Device::flex();
        let m = VitConfig::new(VitKind::Tiny)
            .with_image_size([28, 28])
            .with_num_layers(Some(1))
            .init(&d)
            .unwrap();
        assert!(m.check_input(&[2, 3, 28, 28]).is_ok());
        let err = m.check_input(&[2, 3, 32, 32]).unwrap_err().to_string();
        assert!(err.contains("28, 28"), "{err}");
        assert_eq!(m.summary([3, 28, 28]).rows[1].output, vec![50, 192]);
        let err = VitConfig::new(VitKind::B16)
            .with_image_size([28, 28])
            .init(&d)
            .unwrap_err()
            .to_string();
        assert!(err.contains("28x28 with patch 16"), "{err}");
        let err = VitConfig::new(VitKind::Tiny)
            .with_image_size([32, 32])
            .with_num_heads(Some(5))
            .init(&d)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hidden_dim"), "{err}");
    }

    #[test]
    fn attention_equals_a_direct_softmax_per_head() {
        // Two heads of width 2 on 3 tokens, written out with plain loops.
        let d = Device::flex();
        let m = VitConfig::new(VitKind::Tiny)
            .with_image_size([4, 4])
            .with_patch_size(Some(2))
            .with_num_layers(Some(1))
            .with_num_heads(Some(2))
            .with_hidden_dim(Some(4))
            .with_mlp_dim(Some(8))
            .init(&d)
            .unwrap();
        let b = &m.blocks[0];
        d.seed(5);
        let x = Tensor::<2>::random([3, 4], burn::tensor::Distribution::Normal(0.0, 1.0), &d);
        let got: Vec<f32> = b
            .attention(x.clone(), 1, 3)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let qkv: Vec<f32> = b
            .in_proj
            .forward(x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let (s, dd, hd) = (3, 4, 2);
        let mut o = vec![0f32; s * dd];
        for h in 0..2 {
            for i in 0..s {
                let q = |t: usize, c: usize| qkv[t * 12 + h * hd + c];
                let k = |t: usize, c: usize| qkv[t * 12 + 4 + h * hd + c];
                let v = |t: usize, c: usize| qkv[t * 12 + 8 + h * hd + c];
                let scores: Vec<f32> = (0..s)
                    .map(|j| (0..hd).map(|c| q(i, c) * k(j, c)).sum::<f32>() / (hd as f32).sqrt())
                    .collect();
                let max = scores.iter().cloned().fold(f32::MIN, f32::max);
                let e: Vec<f32> = scores.iter().map(|z| (z - max).exp()).collect();
                let sum: f32 = e.iter().sum();
                for c in 0..hd {
                    o[i * dd + h * hd + c] = (0..s).map(|j| e[j] / sum * v(j, c)).sum();
                }
            }
        }
        let want: Vec<f32> = b
            .out_proj
            .forward(Tensor::<2>::from_data(TensorData::new(o, [3, 4]), &d))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        // The same through the autodiff device (Burn's attention composed of differentiable
        // operations; with dropout on, kiln's own composition).
        let ad = d.clone().autodiff();
        let x_ad = Tensor::<2>::from_data(x.to_data(), &ad).require_grad();
        let mut got_ad = Vec::new();
        for dropout in [0.0, 0.5] {
            let mut m_ad = m.clone().fork(&ad);
            m_ad.blocks[0].attention_dropout = DropoutConfig::new(dropout).init();
            // Frozen: dropout is identity, so the dropout-capable path must give the same.
            let m_ad = if dropout > 0.0 {
                m_ad.freeze_group(burn::module::ParamGroup::all())
            } else {
                m_ad
            };
            let y = m_ad.blocks[0].attention(x_ad.clone(), 1, 3);
            let grads = y.clone().sum().backward();
            assert!(x_ad.grad(&grads).is_some(), "differentiable");
            got_ad.push(y.inner().into_data().try_to_vec::<f32>().unwrap());
        }
        for got in [got.clone()].iter().chain(&got_ad) {
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
            }
        }
    }
}
