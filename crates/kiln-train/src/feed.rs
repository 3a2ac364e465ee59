//! Training batches of one epoch, built through kiln-data's worker pool ([`Prefetch`], the
//! [`Loader`](kiln_data::Loader)'s) on threads of the training loop's scope, so that they may
//! borrow the run's [`BatchSource`].

use kiln_data::DataError;
use kiln_data::loader::{LoaderIter, Prefetch};

use crate::{BatchSource, TrainError};

/// Finished batches each worker may hold ahead of the training thread.
const PREFETCH: usize = 2;

/// One epoch's training batches, in order: built on the calling thread (0 workers) or ahead by
/// workers (batch `i` by worker `i mod n`: the same sequence for any `n`).
pub(crate) struct Feed<'scope, B> {
    batches: LoaderIter<'scope, B, TrainError>,
}

impl<'scope, B: Send + 'scope> Feed<'scope, B> {
    pub(crate) fn start<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        train: &'env dyn BatchSource<B>,
        batches: Vec<Vec<usize>>,
        epoch: u64,
        workers: usize,
    ) -> Self {
        let total = batches.len();
        // Each sample's random draws depend on (seed, epoch, index): any thread builds the same batch.
        let build = move |i: usize| train.epoch_batch(&batches[i], epoch);
        let pool = Prefetch {
            workers,
            prefetch: PREFETCH,
        };
        Self {
            batches: pool.run(total, build, &scope),
        }
    }

    pub(crate) fn next_batch(&mut self) -> Result<B, TrainError> {
        self.batches.next().unwrap_or_else(|| {
            Err(TrainError::Data(DataError::Custom(
                "internal: a batch requested past the end of the epoch (or after an error)".into(),
            )))
        })
    }
}
