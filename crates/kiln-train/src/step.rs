//! One training step's forward, loss and backward on a replica's share of the batch, and the
//! gradient clipping applied before the optimizer step.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;

use crate::TrainError;
use crate::error::RunPoint;
use crate::guard::{self, device_failure};
use crate::task::Task;

/// One micro-batch of a step and the positions it came from.
pub(crate) struct Micro<B> {
    pub(crate) batch: B,
    pub(crate) positions: Vec<usize>,
}

/// What every replica needs to know to compute a step's gradients.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepContext {
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
    /// The run's first step: the task checks its loss settings against the model then.
    pub(crate) first: bool,
}

/// The measurements and gradients of one replica's share of a step.
pub(crate) struct ShardOut<S> {
    pub(crate) loss_sum: f64,
    pub(crate) seen: usize,
    pub(crate) stats: S,
    /// The first non-finite micro-batch loss and that micro-batch's size. Every backward pass
    /// still runs (replicas in a collective must all take part), but no step is taken.
    pub(crate) non_finite: Option<(f32, usize)>,
    pub(crate) grads: Option<GradientsParams>,
}

impl<S: Default> Default for ShardOut<S> {
    fn default() -> Self {
        Self {
            loss_sum: 0.0,
            seen: 0,
            stats: S::default(),
            non_finite: None,
            grads: None,
        }
    }
}

impl<S> ShardOut<S> {
    /// Adds another replica's share (its gradients are the caller's to add).
    pub(crate) fn absorb<M: Module, T: Task<M, Stats = S>>(&mut self, task: &T, other: ShardOut<S>) {
        self.loss_sum += other.loss_sum;
        self.seen += other.seen;
        task.merge(&mut self.stats, other.stats);
        if self.non_finite.is_none() {
            self.non_finite = other.non_finite;
        }
    }
}

/// Forward, loss and backward over `micro` on `model`, gradients summed over the micro-batches
/// (each loss scaled by `context.scale`). A panic inside the backend (out of memory, most often)
/// is caught, unprinted ([`guard::catch`]), and becomes an error naming the step.
pub(crate) fn shard_grads<M: Module, T: Task<M>>(
    task: &T,
    model: &M,
    micro: Vec<Micro<T::Batch>>,
    context: &StepContext,
    ad: &Device,
) -> Result<ShardOut<T::Stats>, TrainError> {
    guard::catch(|| shard_grads_unguarded(task, model, micro, context, ad)).unwrap_or_else(|caught| {
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

fn shard_grads_unguarded<M: Module, T: Task<M>>(
    task: &T,
    model: &M,
    micro: Vec<Micro<T::Batch>>,
    context: &StepContext,
    ad: &Device,
) -> Result<ShardOut<T::Stats>, TrainError> {
    let mut out = ShardOut::<T::Stats>::default();
    let mut accumulated: Option<GradientsAccumulator<M>> = (micro.len() > 1).then(GradientsAccumulator::new);
    for Micro { batch, positions } in micro {
        let n = task.batch_len(&batch);
        let (loss, stats) = task
            .train_loss(model, batch, &positions, ad, context.first)
            .map_err(|e| in_epoch(e, context.epoch))?;
        let loss_value: f32 = loss.clone().into_scalar();
        if !loss_value.is_finite() && out.non_finite.is_none() {
            out.non_finite = Some((loss_value, n));
        }
        task.merge(&mut out.stats, stats);
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

/// A training-time label error names the epoch.
fn in_epoch(e: TrainError, epoch: usize) -> TrainError {
    match e {
        TrainError::LabelOutOfRange {
            label,
            position,
            classes,
            context,
        } => TrainError::LabelOutOfRange {
            label,
            position,
            classes,
            context: format!("{context}, epoch {epoch}"),
        },
        e => e,
    }
}

/// The first non-finite value among `model`'s float parameters, if any (one reduction per
/// parameter: NaN and ±inf survive a sum).
pub(crate) fn non_finite_weight<M: Module>(model: &M) -> Option<f64> {
    struct Finite(Option<f64>);
    impl ModuleVisitor for Finite {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.0.is_none() {
                let s: f32 = param.val().sum().into_scalar();
                if !s.is_finite() {
                    self.0 = Some(f64::from(s));
                }
            }
        }
    }
    let mut v = Finite(None);
    model.visit(&mut v);
    v.0
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
