//! Data parallelism: one model replica per device, each step's batch split between them, and
//! their gradients averaged, so every replica takes the same optimizer step.
//!
//! Two ways to average, chosen by [`DataParallel::new`] from the devices:
//!
//! * [`GradSync::AllReduce`] (every device CUDA): Burn's distributed data parallel. Parameters
//!   are marked distributed, and Burn's autodiff all-reduces each gradient with `Mean` (NCCL) as
//!   the backward pass produces it. Each replica then steps its own optimizer on the same
//!   averaged gradients: no weights travel after the start. Needs the `cuda` feature and
//!   `libnccl.so.2`; **never run on these project machines** (no GPU), see `docs/gpu.md`.
//! * [`GradSync::Gather`] (any backend): the replicas' gradients are copied to the first device,
//!   summed there (each loss was scaled by 1/n), and the average is copied back to every replica.
//!   Slower — two copies of the gradients per step — but it works everywhere, and on CPU it is
//!   what the tests use to prove that n replicas train exactly like one device on the whole batch.
//!
//! Either way the global batch (`batch_size`, shuffled over the whole dataset) is cut into n
//! equal contiguous shards, one per replica: every device sees a random slice of the data each
//! step, not a fixed part of the dataset (the trap of Burn's own `split_dataloader`). BatchNorm
//! uses each replica's own shard statistics (PyTorch's DDP without `SyncBatchNorm` does the
//! same); the first replica's running statistics are the ones evaluated and saved.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::distributed::{DistributedConfig, DistributedContext, ReduceOperation};
use kiln_data::DataError;
use kiln_data::loader::panic_message;

use crate::step::{Micro, ShardOut, StepContext, clip_grad_norm, shard_grads};
use crate::task::Task;
use crate::{DeviceSpec, LrGroup, OptimizerConfig, TrainError};

/// How the replicas' gradients are averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradSync {
    /// Burn's collective all-reduce (NCCL) inside the backward pass: CUDA devices only.
    AllReduce,
    /// Copy to the first device, sum there, copy the average back: any backend.
    Gather,
}

/// Several devices training one model together (`kiln train --devices cuda:0,cuda:1`).
#[derive(Debug, Clone)]
pub struct DataParallel {
    /// The devices, one replica each. The first is the main one (the device passed to `fit`):
    /// it evaluates, checkpoints and holds the model `fit` returns.
    pub devices: Vec<Device>,
    /// How gradients are averaged.
    pub sync: GradSync,
}

impl DataParallel {
    /// Replicas on `specs`: all-reduce when every device is CUDA, gather otherwise.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] for fewer than two devices or a mix of backends;
    /// [`TrainError::Device`] for a backend not compiled in.
    pub fn new(specs: &[DeviceSpec]) -> Result<Self, TrainError> {
        let list = || specs.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",");
        if specs.len() < 2 {
            return Err(TrainError::InvalidConfig {
                field: "devices",
                value: list(),
                reason: "data parallelism needs at least two devices; train on one device instead".into(),
            });
        }
        if specs.iter().any(|s| s.feature() != specs[0].feature()) {
            return Err(TrainError::InvalidConfig {
                field: "devices",
                value: list(),
                reason: "the devices must all be of one backend".into(),
            });
        }
        let devices = specs.iter().map(|s| s.device()).collect::<Result<Vec<_>, _>>()?;
        let sync = if matches!(specs[0], DeviceSpec::Cuda(_)) {
            GradSync::AllReduce
        } else {
            GradSync::Gather
        };
        Ok(Self { devices, sync })
    }

    /// Checks that batches of `batch_size` split evenly over the devices and that no GPU is
    /// listed twice (call it before any output is written; `fit` checks it again).
    ///
    /// A CPU device may repeat (replicas are threads; the tests use it); a GPU may not: replicas
    /// on one GPU only compete for it, and several threads driving one wgpu device intermittently
    /// failed inside Burn 0.22.1's fusion (`Should have handle for tensor TensorId …`, seen on
    /// lavapipe).
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] naming `batch_size`, or `devices` when there are fewer than 2
    /// or a GPU repeats.
    pub fn check_batch_size(&self, batch_size: usize) -> Result<(), TrainError> {
        let n = self.devices.len();
        if n < 2 {
            return Err(TrainError::InvalidConfig {
                field: "devices",
                value: n.to_string(),
                reason: "data parallelism needs at least two devices".into(),
            });
        }
        let gpu = |d: &Device| !DeviceSpec::of(d).is_some_and(DeviceSpec::is_cpu);
        let devices = &self.devices;
        if let Some(i) = (1..n).find(|&i| gpu(&devices[i]) && devices[..i].contains(&devices[i])) {
            let names: Vec<String> = devices.iter().map(crate::device::name).collect();
            return Err(TrainError::InvalidConfig {
                field: "devices",
                value: names.join(","),
                reason: format!(
                    "`{}` is listed twice (position {}): replicas on one GPU only compete for it; list each GPU once",
                    names[i],
                    i + 1
                ),
            });
        }
        if !batch_size.is_multiple_of(n) {
            return Err(TrainError::InvalidConfig {
                field: "batch_size",
                value: batch_size.to_string(),
                reason: format!(
                    "must split evenly over the {n} devices (e.g. {})",
                    (batch_size / n).max(1) * n
                ),
            });
        }
        Ok(())
    }

    /// Replicas on `devices` averaging by [`GradSync::Gather`] (e.g. the same CPU device twice,
    /// to check the arithmetic of data parallelism).
    pub fn gather(devices: Vec<Device>) -> Self {
        Self {
            devices,
            sync: GradSync::Gather,
        }
    }
}

/// Marks every parameter distributed, so that Burn's backward all-reduces its gradient.
struct MarkDistributed;

impl ModuleMapper for MarkDistributed {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.set_distributed(id), mapper)
    }
}

/// Prepares the main replica's model for `sync` (marks it distributed for all-reduce).
pub(crate) fn prepare_main<M: Module>(model: M, sync: GradSync) -> M {
    match sync {
        GradSync::AllReduce => model.map(&mut MarkDistributed),
        GradSync::Gather => model,
    }
}

enum Command<B> {
    /// Forward and backward over these micro-batches.
    Grads {
        micro: Vec<Micro<B>>,
        context: StepContext,
    },
    Apply {
        grads: Option<GradientsParams>,
        lr: f64,
        clip: Option<f64>,
    },
}

struct Worker<B, S> {
    device: Device,
    commands: Sender<Command<B>>,
    replies: Receiver<Result<ShardOut<S>, TrainError>>,
}

/// The replicas other than the main one, each on its own thread.
pub(crate) struct Replicas<B, S> {
    workers: Vec<Worker<B, S>>,
    sync: GradSync,
    // Keeps Burn's communication server alive while the replicas train (all-reduce only).
    _context: Option<DistributedContext>,
}

/// What each worker needs to build its replica.
pub(crate) struct ReplicaSetup<'a> {
    pub(crate) optimizer: &'a OptimizerConfig,
    pub(crate) groups: &'a [LrGroup],
    /// The checkpoint folder the run resumed from: the optimizer state comes from it.
    pub(crate) resume: Option<PathBuf>,
    /// Samples per micro-batch, split evenly over the replicas.
    pub(crate) batch_size: usize,
}

impl<B: Send + 'static, S: Send + 'static> Replicas<B, S> {
    /// Starts one worker per device after the first, each with a copy of `model` (the main
    /// replica's weights, already restored on resume).
    pub(crate) fn start<'scope, 'env, M, T>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        task: &'env T,
        parallel: &DataParallel,
        main: &Device,
        model: &M,
        setup: ReplicaSetup<'_>,
    ) -> Result<Self, TrainError>
    where
        M: Module + 'static,
        T: Task<M, Batch = B, Stats = S>,
    {
        if parallel.devices.first() != Some(main) {
            return Err(TrainError::InvalidConfig {
                field: "devices",
                value: format!("{:?}", parallel.devices),
                reason: format!("the first device must be the one training runs on ({main:?})"),
            });
        }
        parallel.check_batch_size(setup.batch_size)?;
        let context = (parallel.sync == GradSync::AllReduce).then(|| {
            DistributedContext::init(
                parallel.devices.clone(),
                DistributedConfig {
                    all_reduce_op: ReduceOperation::Mean,
                },
            )
        });
        let mut workers = Vec::new();
        for device in parallel.devices.iter().skip(1) {
            let (commands, inbox) = channel::<Command<B>>();
            let (reply, replies) = channel();
            let replica = model.clone();
            let device_w = device.clone();
            let sync = parallel.sync;
            let optimizer = *setup.optimizer;
            let groups = setup.groups.to_vec();
            let resume = setup.resume.clone();
            scope.spawn(move || {
                let failed = reply.clone();
                let run = AssertUnwindSafe(move || {
                    replica_loop(
                        task, replica, device_w, sync, optimizer, groups, resume, inbox, reply,
                    )
                });
                if let Err(payload) = catch_unwind(run) {
                    let _ = failed.send(Err(DataError::WorkerPanic {
                        batch: 0,
                        message: format!("replica thread: {}", panic_message(&*payload)),
                    }
                    .into()));
                }
            });
            workers.push(Worker {
                device: device.clone(),
                commands,
                replies,
            });
        }
        Ok(Self {
            workers,
            sync: parallel.sync,
            _context: context,
        })
    }

    /// Number of replicas, the main one included.
    fn count(&self) -> usize {
        self.workers.len() + 1
    }

    /// The step's gradients: `micro` is split over the replicas, the main replica computes its
    /// shard on this thread while the others run; returns the summed metrics and the averaged
    /// gradients on the main device.
    pub(crate) fn grads<M: Module, T: Task<M, Batch = B, Stats = S>>(
        &mut self,
        task: &T,
        model: &M,
        micro: Vec<Micro<B>>,
        context: &StepContext,
        ad: &Device,
    ) -> Result<(ShardOut<S>, GradientsParams), TrainError> {
        let n = self.count();
        let mut shards: Vec<Vec<Micro<B>>> = (0..n).map(|_| Vec::with_capacity(micro.len())).collect();
        for m in micro {
            for (shard, part) in shards.iter_mut().zip(split(task, m, n)?) {
                shard.push(part);
            }
        }
        // Gather sums n gradients: scale each loss by 1/n. All-reduce averages by itself.
        let scale = match self.sync {
            GradSync::Gather => context.scale / n as f64,
            GradSync::AllReduce => context.scale,
        };
        let mut shards = shards.into_iter();
        let own = shards.next().unwrap_or_default();
        for (worker, shard) in self.workers.iter().zip(shards) {
            let command = Command::Grads {
                micro: shard,
                context: StepContext {
                    scale,
                    first: false,
                    ..*context
                },
            };
            worker.commands.send(command).map_err(|_| gone(&worker.device))?;
        }
        let mut total = shard_grads(task, model, own, &StepContext { scale, ..*context }, ad)?;
        let mut grads = total.grads.take().unwrap_or_default();
        for worker in &self.workers {
            let mut out = worker.replies.recv().map_err(|_| gone(&worker.device))??;
            if let Some(theirs) = out.grads.take() {
                let plain = ad.clone().without_autodiff();
                add_grads(model, &mut grads, theirs.to_device(&plain, model));
            }
            total.absorb(task, out);
        }
        Ok((total, grads))
    }

    /// Every other replica takes the step: with `grads` (already clipped) under gather, with its
    /// own all-reduced gradients (clipped the same way) under all-reduce.
    pub(crate) fn apply<M: Module>(
        &mut self,
        model: &M,
        grads: &GradientsParams,
        lr: f64,
        clip: Option<f64>,
    ) -> Result<(), TrainError> {
        for worker in &self.workers {
            let (grads, clip) = match self.sync {
                GradSync::Gather => (Some(copy_grads(model, grads, &worker.device)), None),
                GradSync::AllReduce => (None, clip),
            };
            worker
                .commands
                .send(Command::Apply { grads, lr, clip })
                .map_err(|_| gone(&worker.device))?;
        }
        Ok(())
    }
}

fn gone(device: &Device) -> TrainError {
    TrainError::Data(DataError::Custom(format!(
        "the replica on {} stopped (see the error printed above)",
        crate::device::name(device)
    )))
}

#[allow(clippy::too_many_arguments)] // the worker's whole state, moved into its thread
fn replica_loop<M: Module, T: Task<M>>(
    task: &T,
    model: M,
    device: Device,
    sync: GradSync,
    optimizer: OptimizerConfig,
    groups: Vec<LrGroup>,
    resume: Option<PathBuf>,
    inbox: Receiver<Command<T::Batch>>,
    reply: Sender<Result<ShardOut<T::Stats>, TrainError>>,
) {
    let ad = device.without_autodiff().autodiff();
    let mut model = prepare_main(model.fork(&ad).train(), sync);
    let built = optimizer.build(groups).and_then(|optim| match &resume {
        Some(folder) => {
            let restored = crate::checkpoint::load(folder, model.clone())?;
            Ok(optim.load_record(restored.optimizer))
        }
        None => Ok(optim),
    });
    let mut optim = match built {
        Ok(o) => o,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    let mut pending: Option<GradientsParams> = None;
    for command in inbox {
        match command {
            Command::Grads { micro, context } => match shard_grads(task, &model, micro, &context, &ad) {
                Ok(mut out) => {
                    if sync == GradSync::AllReduce {
                        pending = out.grads.take();
                    }
                    if reply.send(Ok(out)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            },
            Command::Apply { grads, lr, clip } => {
                let mut grads = grads.or_else(|| pending.take()).unwrap_or_default();
                if let Some(max_norm) = clip {
                    clip_grad_norm(&model, &mut grads, max_norm);
                }
                model = optim.step(lr, model, grads);
            }
        }
    }
}

/// Cuts a micro-batch into `n` equal contiguous shards.
fn split<M: Module, T: Task<M>>(
    task: &T,
    m: Micro<T::Batch>,
    n: usize,
) -> Result<Vec<Micro<T::Batch>>, TrainError> {
    let b = task.batch_len(&m.batch);
    if !b.is_multiple_of(n) {
        return Err(TrainError::InvalidConfig {
            field: "batch_size",
            value: b.to_string(),
            reason: format!("must split evenly over the {n} devices"),
        });
    }
    let per = b / n;
    Ok(task
        .split(m.batch, n)
        .into_iter()
        .zip(m.positions.chunks(per.max(1)))
        .map(|(batch, positions)| Micro {
            batch,
            positions: positions.to_vec(),
        })
        .collect())
}

/// `acc += other`, parameter by parameter (both on the same device).
fn add_grads<M: Module>(model: &M, acc: &mut GradientsParams, mut other: GradientsParams) {
    struct Add<'a> {
        acc: &'a mut GradientsParams,
        other: &'a mut GradientsParams,
    }
    impl ModuleVisitor for Add<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(theirs) = self.other.remove::<D>(param.id) {
                let sum = match self.acc.remove::<D>(param.id) {
                    Some(mine) => mine + theirs,
                    None => theirs,
                };
                self.acc.register(param.id, sum);
            }
        }
    }
    model.visit(&mut Add {
        acc,
        other: &mut other,
    });
}

/// A copy of `grads` on `device`.
fn copy_grads<M: Module>(model: &M, grads: &GradientsParams, device: &Device) -> GradientsParams {
    struct Copy<'a> {
        from: &'a GradientsParams,
        to: GradientsParams,
        device: &'a Device,
    }
    impl ModuleVisitor for Copy<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.from.get::<D>(param.id) {
                self.to.register(param.id, g.to_device(self.device));
            }
        }
    }
    let mut visitor = Copy {
        from: grads,
        to: GradientsParams::new(),
        device,
    };
    model.visit(&mut visitor);
    visitor.to
}
