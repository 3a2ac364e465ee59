//! Training batches of one epoch, built on the training thread or ahead by worker threads.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use kiln_data::DataError;
use kiln_data::loader::panic_message;
use kiln_transforms::ChwBatch;

use crate::{BatchSource, TrainError};

/// Training batches of one epoch, in order, built on the calling thread or ahead by workers
/// (batch `i` by worker `i mod n`, each with its own bounded queue, read round-robin: the same
/// sequence for any `n`).
pub(crate) enum Feed<'env> {
    Inline {
        train: &'env dyn BatchSource,
        batches: Vec<Vec<usize>>,
        epoch: u64,
        next: usize,
    },
    Workers {
        receivers: Vec<Receiver<Result<ChwBatch, TrainError>>>,
        next: usize,
        total: usize,
    },
}

/// Finished batches each worker may hold ahead of the training thread.
const PREFETCH: usize = 2;

impl<'env> Feed<'env> {
    pub(crate) fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        train: &'env dyn BatchSource,
        batches: Vec<Vec<usize>>,
        epoch: u64,
        workers: usize,
    ) -> Self {
        let total = batches.len();
        let workers = workers.min(total);
        if workers == 0 {
            return Feed::Inline {
                train,
                batches,
                epoch,
                next: 0,
            };
        }
        let batches = Arc::new(batches);
        let receivers = (0..workers)
            .map(|w| {
                let (tx, rx) = sync_channel(PREFETCH);
                let batches = Arc::clone(&batches);
                scope.spawn(move || {
                    for i in (w..total).step_by(workers) {
                        let built = build(train, &batches[i], epoch, i);
                        let failed = built.is_err();
                        // A closed queue: the training thread stopped (an error); stop too.
                        if tx.send(built).is_err() || failed {
                            break;
                        }
                    }
                });
                rx
            })
            .collect();
        Feed::Workers {
            receivers,
            next: 0,
            total,
        }
    }

    pub(crate) fn next_batch(&mut self) -> Result<ChwBatch, TrainError> {
        match self {
            Feed::Inline {
                train,
                batches,
                epoch,
                next,
            } => {
                let positions = batches.get(*next).ok_or_else(|| exhausted(*next))?;
                *next += 1;
                build(*train, positions, *epoch, *next - 1)
            }
            Feed::Workers {
                receivers,
                next,
                total,
            } => {
                if *next >= *total {
                    return Err(exhausted(*next));
                }
                let i = *next;
                *next += 1;
                receivers[i % receivers.len()].recv().map_err(|_| {
                    TrainError::Data(DataError::WorkerPanic {
                        batch: i,
                        message: "the batch worker stopped without a result".into(),
                    })
                })?
            }
        }
    }
}

/// Batch `i`; a panicking dataset or transform becomes an error naming the batch (the panic hook
/// has already printed where it happened).
fn build(train: &dyn BatchSource, positions: &[usize], epoch: u64, i: usize) -> Result<ChwBatch, TrainError> {
    catch_unwind(AssertUnwindSafe(|| train.epoch_batch(positions, epoch))).unwrap_or_else(|payload| {
        Err(DataError::WorkerPanic {
            batch: i,
            message: panic_message(&*payload),
        }
        .into())
    })
}

fn exhausted(i: usize) -> TrainError {
    TrainError::Data(DataError::Custom(format!(
        "internal: batch {i} requested past the end of the epoch"
    )))
}
