//! One training step's forward, loss and backward on a replica's share of the batch, and the
//! gradient clipping applied before the optimizer step.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use kiln_models::Classifier;
use kiln_transforms::ChwBatch;

use crate::TrainError;
use crate::error::RunPoint;
use crate::guard::{self, device_failure};
use crate::loss::LossConfig;

/// One micro-batch of a step and the positions it came from.
pub(crate) struct Micro {
    pub(crate) batch: ChwBatch,
    pub(crate) positions: Vec<usize>,
}

/// What every replica needs to know to compute a step's gradients.
pub(crate) struct StepContext<'a> {
    pub(crate) loss: &'a LossConfig,
    /// Multiplies each micro-batch's mean loss (1/k for k accumulated micro-batches, and 1/n
    /// more when n replicas' gradients are summed).
    pub(crate) scale: f64,
    pub(crate) epoch: usize,
    /// 1-based step within the epoch.
    pub(crate) step: usize,
    /// `train.batch_size` and `train.accumulate`, for an out-of-memory error's hint.
    pub(crate) batch_size: usize,
    /// See `batch_size`.
    pub(crate) accumulate: usize,
    /// Check the loss settings against the model's output width (the run's first step).
    pub(crate) validate_loss: bool,
}

/// The metrics and gradients of one replica's share of a step.
#[derive(Default)]
pub(crate) struct ShardOut {
    pub(crate) loss_sum: f64,
    pub(crate) correct: usize,
    pub(crate) seen: usize,
    /// The first non-finite micro-batch loss and that micro-batch's size. Every backward pass
    /// still runs (replicas in a collective must all take part), but no step is taken.
    pub(crate) non_finite: Option<(f32, usize)>,
    pub(crate) grads: Option<GradientsParams>,
}

/// Forward, loss and backward over `micro` on `model`, gradients summed over the micro-batches
/// (each loss scaled by `context.scale`). A panic inside the backend (out of memory, most often)
/// is caught, unprinted ([`guard::catch`]), and becomes an error naming the step.
pub(crate) fn shard_grads<M: Classifier>(
    model: &M,
    micro: Vec<Micro>,
    context: &StepContext<'_>,
    ad: &Device,
) -> Result<ShardOut, TrainError> {
    guard::catch(|| shard_grads_unguarded(model, micro, context, ad)).unwrap_or_else(|caught| {
        Err(device_failure(
            &caught,
            &crate::device::name(ad),
            RunPoint::Training {
                epoch: context.epoch,
                step: context.step,
            },
            context.batch_size,
            context.accumulate,
        ))
    })
}

fn shard_grads_unguarded<M: Classifier>(
    model: &M,
    micro: Vec<Micro>,
    context: &StepContext<'_>,
    ad: &Device,
) -> Result<ShardOut, TrainError> {
    let mut out = ShardOut::default();
    let mut accumulated: Option<GradientsAccumulator<M>> = (micro.len() > 1).then(GradientsAccumulator::new);
    for Micro { batch, positions } in micro {
        let n = batch.labels.len();
        let labels = batch.labels.clone();
        let (images, targets) = batch.into_tensors(ad);
        let logits = model.logits(images);
        if context.validate_loss {
            context.loss.validate(Some(logits.dims()[1]))?;
        }
        check_labels(&labels, &positions, logits.dims()[1], || {
            format!("training, epoch {}", context.epoch)
        })?;
        let loss = context.loss.forward(logits.clone(), targets.clone());
        let loss_value: f32 = loss.clone().into_scalar();
        if !loss_value.is_finite() && out.non_finite.is_none() {
            out.non_finite = Some((loss_value, n));
        }
        out.correct += count_correct(logits.detach(), targets);
        out.loss_sum += f64::from(loss_value) * n as f64;
        out.seen += n;
        let loss = if context.scale == 1.0 {
            loss
        } else {
            loss.mul_scalar(context.scale)
        };
        let g = GradientsParams::from_grads(loss.backward(), model);
        match accumulated.as_mut() {
            Some(acc) => acc.accumulate(model, g),
            None => out.grads = Some(g),
        }
    }
    if let Some(mut acc) = accumulated {
        out.grads = Some(acc.grads());
    }
    Ok(out)
}

/// Scales `grads` so that their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does (`coef = max_norm / (norm + 1e-6)`, applied when < 1).
/// Returns the norm before clipping.
pub fn clip_grad_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    struct SquaredNorm<'a> {
        grads: &'a GradientsParams,
        sum: f64,
    }
    impl ModuleVisitor for SquaredNorm<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let s: f32 = g.powi_scalar(2).sum().into_scalar();
                self.sum += f64::from(s);
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        coef: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, g.mul_scalar(self.coef));
            }
        }
    }
    let mut norm = SquaredNorm { grads, sum: 0.0 };
    model.visit(&mut norm);
    let total = norm.sum.sqrt();
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        model.visit(&mut Scale { grads, coef });
    }
    total
}

/// Refuses a batch with a label ≥ `classes` before it reaches the loss (where Burn's gather would
/// panic).
pub(crate) fn check_labels(
    labels: &[u32],
    positions: &[usize],
    classes: usize,
    context: impl FnOnce() -> String,
) -> Result<(), TrainError> {
    match labels.iter().position(|&l| l as usize >= classes) {
        Some(i) => Err(TrainError::LabelOutOfRange {
            label: labels[i],
            position: positions.get(i).copied().unwrap_or(i),
            classes,
            context: context(),
        }),
        None => Ok(()),
    }
}

pub(crate) fn count_correct(logits: Tensor<2>, targets: Tensor<1, Int>) -> usize {
    let predicted = logits.argmax(1).squeeze_dim::<1>(1);
    let hits: i64 = predicted.equal(targets).int().sum().into_scalar();
    usize::try_from(hits).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_scales_the_global_norm_like_pytorch() {
        // torch.nn.utils.clip_grad_norm_(params, max_norm): total = ‖all grads‖₂,
        // each grad *= max_norm / (total + 1e-6) when that is < 1.
        use burn::nn::LinearConfig;
        let d = Device::flex().autodiff();
        d.seed(2);
        let layer = LinearConfig::new(4, 3).init(&d);
        let x = Tensor::<2>::random([5, 4], burn::tensor::Distribution::Normal(0.0, 3.0), &d);
        let loss = layer.forward(x).powi_scalar(2).mean();
        let mut grads = GradientsParams::from_grads(loss.backward(), &layer);
        let w0 = grads
            .get::<2>(layer.weight.id)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let total = clip_grad_norm(&layer, &mut grads, 1e9);
        let by_hand: f64 = {
            let b = grads.get::<1>(layer.bias.as_ref().unwrap().id).unwrap();
            let sq = |v: Vec<f32>| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>();
            (sq(w0.clone()) + sq(b.into_data().try_to_vec::<f32>().unwrap())).sqrt()
        };
        assert!((total - by_hand).abs() < 1e-4 * by_hand, "{total} vs {by_hand}");
        let again = clip_grad_norm(&layer, &mut grads, total / 4.0);
        assert!((again - total).abs() < 1e-4 * total, "unchanged by a large max");
        let after = clip_grad_norm(&layer, &mut grads, 1e9);
        assert!(
            (after - total / 4.0).abs() < 1e-4 * total,
            "{after} vs {}",
            total / 4.0
        );
        let w1 = grads
            .get::<2>(layer.weight.id)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for (a, b) in w1.iter().zip(&w0) {
            assert!(
                (a * 4.0 - b).abs() < 1e-4 * b.abs().max(1.0),
                "every tensor scaled by the same factor"
            );
        }
    }
}
