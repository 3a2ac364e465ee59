//! A deterministic, parallel data loader.
//!
//! Burn's `DataLoader` yields batches in an order that depends on thread timing and cannot drop a
//! final partial batch. kiln's [`Loader`]:
//!
//! * shuffles with a seed, per epoch ([`BatchOrder`]): epoch `e`'s order depends only on
//!   `(seed, e)`; `drop_last` drops the final partial batch;
//! * runs `num_workers` threads, each building whole batches, with at most `prefetch` finished
//!   batches waiting per worker;
//! * gives **the same batches for any number of workers**, random augmentation included: each
//!   sample's transform gets its own generator, seeded from `(seed, epoch, dataset index)`;
//! * turns a failing sample into an error naming its index (and file, where the dataset has one),
//!   and a panicking worker into [`DataError::WorkerPanic`]; the iterator then ends. Nothing hangs:
//!   dropping the iterator stops and joins the workers.
//!
//! Debugging: `dataset.get(i)` shows one sample; with `num_workers = 0` everything runs on the
//! calling thread, so a breakpoint or a `dbg!` in a transform works (PyTorch's worker processes are
//! where such breakpoints hang).
//!
//! ```
//! # fn main() -> Result<(), kiln_data::DataError> {
//! use burn::data::dataset::Dataset;
//! use burn::prelude::*;
//! use kiln_data::batcher::{ClassSample, ClassificationBatcher};
//! use kiln_data::loader::{Loader, LoaderConfig, SampleRng};
//! use kiln_data::{Chw, Gray, Image, InMemory};
//!
//! // 10 grey 2x2 images, image i filled with i, label i % 3.
//! let items: Vec<(Vec<f32>, u32)> = (0..10).map(|i| (vec![i as f32; 4], i % 3)).collect();
//! let dataset = InMemory::new(items);
//! // The per-sample transform: here a random flip of the sign, from the sample's own generator.
//! let transform = |(px, label): (Vec<f32>, u32), rng: &mut SampleRng| {
//!     let sign = if rng.below(2) == 0 { 1.0 } else { -1.0 };
//!     let px = px.into_iter().map(|v| v * sign).collect();
//!     Ok(ClassSample::<Gray> { image: Image::<Chw, Gray, f32>::new(2, 2, px)?, label, path: None })
//! };
//! let batcher = ClassificationBatcher::new(3, Device::flex());
//! let config = LoaderConfig { batch_size: 4, num_workers: 2, drop_last: true, ..LoaderConfig::default() };
//! let loader = Loader::new(dataset, transform, batcher, config)?;
//! assert_eq!(loader.num_batches(), 2); // 10 samples, batches of 4, last partial batch dropped
//!
//! let first = loader.iter().next().unwrap()?; // debug a batch: the first of epoch 0
//! assert_eq!(first.images.dims(), [4, 1, 2, 2]);
//! # Ok(()) }
//! ```

use std::any::Any;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use burn::data::dataset::Dataset;

use crate::DataError;
use crate::batch::{BatchOrder, SplitMix64};
use crate::batcher::{Collate, Indexed};

/// The random generator a transform receives, seeded from `(seed, epoch, sample index)`.
pub type SampleRng = SplitMix64;

/// A per-sample transform: decoding is the dataset's job, this is everything after it.
///
/// Implemented for closures `Fn(I, &mut SampleRng) -> Result<O, DataError>`.
pub trait SampleTransform<I>: Send + Sync {
    /// What the batcher receives.
    type Output;

    /// Transforms one sample, drawing any randomness from `rng` only.
    ///
    /// # Errors
    ///
    /// Whatever makes the sample unusable.
    fn apply(&self, item: I, rng: &mut SampleRng) -> Result<Self::Output, DataError>;
}

impl<I, O, F> SampleTransform<I> for F
where
    F: Fn(I, &mut SampleRng) -> Result<O, DataError> + Send + Sync,
{
    type Output = O;

    fn apply(&self, item: I, rng: &mut SampleRng) -> Result<O, DataError> {
        self(item, rng)
    }
}

/// How batches are drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Samples per batch (default 64).
    pub batch_size: usize,
    /// Reshuffle every epoch (default true; false keeps dataset order, for evaluation).
    pub shuffle: bool,
    /// Seed of the shuffle and of every sample's generator (default 42).
    pub seed: u64,
    /// Drop a final partial batch (default false; true for training with BatchNorm).
    pub drop_last: bool,
    /// Worker threads; 0 builds batches on the calling thread (default 2).
    pub num_workers: usize,
    /// Finished batches each worker may hold ahead of the consumer (default 2, at least 1).
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            shuffle: true,
            seed: 42,
            drop_last: false,
            num_workers: 2,
            prefetch: 2,
        }
    }
}

/// The seed of sample `index`'s generator in `epoch`: a hash, so neighbouring samples and epochs
/// get unrelated streams.
pub fn sample_seed(seed: u64, epoch: u64, index: usize) -> u64 {
    let mut g = SplitMix64::new(seed ^ 0xD1B5_4A32_D192_ED03);
    let a = g.next_u64() ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut g = SplitMix64::new(a);
    let b = g.next_u64() ^ (index as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    SplitMix64::new(b).next_u64()
}

struct Shared<D, T, B, I> {
    dataset: D,
    transform: T,
    batcher: B,
    seed: u64,
    _item: PhantomData<fn() -> I>,
}

impl<D, T, B, I> Shared<D, T, B, I>
where
    D: Dataset<I, DataError>,
    T: SampleTransform<I>,
    B: Collate<T::Output>,
{
    fn build(&self, epoch: u64, indices: &[usize]) -> Result<B::Batch, DataError> {
        let mut items = Vec::with_capacity(indices.len());
        for &index in indices {
            let named = |e: DataError| match e {
                e @ DataError::Sample { .. } => e,
                e => DataError::Sample {
                    index,
                    source: Box::new(e),
                },
            };
            let item = self.dataset.get(index).map_err(named)?;
            let mut rng = SplitMix64::new(sample_seed(self.seed, epoch, index));
            let item = self.transform.apply(item, &mut rng).map_err(named)?;
            items.push(Indexed { index, item });
        }
        self.batcher.collate(items)
    }
}

/// A dataset, a per-sample transform and a batcher, iterated epoch by epoch.
pub struct Loader<D, T, B, I> {
    shared: Arc<Shared<D, T, B, I>>,
    order: BatchOrder,
    config: LoaderConfig,
}

impl<D, T, B, I> Loader<D, T, B, I>
where
    D: Dataset<I, DataError> + 'static,
    T: SampleTransform<I> + 'static,
    B: Collate<T::Output> + 'static,
    I: 'static,
{
    /// A loader over `dataset`.
    ///
    /// # Errors
    ///
    /// [`DataError::ZeroBatchSize`].
    pub fn new(dataset: D, transform: T, batcher: B, config: LoaderConfig) -> Result<Self, DataError> {
        let seed = config.shuffle.then_some(config.seed);
        let order = BatchOrder::new(dataset.len(), config.batch_size, seed, config.drop_last)?;
        Ok(Self {
            shared: Arc::new(Shared {
                dataset,
                transform,
                batcher,
                seed: config.seed,
                _item: PhantomData,
            }),
            order,
            config,
        })
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        self.order.num_batches()
    }

    /// Number of samples in the dataset.
    pub fn dataset_len(&self) -> usize {
        self.shared.dataset.len()
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// The batches of epoch 0.
    pub fn iter(&self) -> LoaderIter<'static, B::Batch> {
        self.epoch(0)
    }

    /// The batches of epoch `epoch` (its shuffle and every sample's generator depend on it).
    pub fn epoch(&self, epoch: u64) -> LoaderIter<'static, B::Batch> {
        let batches = self.order.epoch(epoch);
        let shared = Arc::clone(&self.shared);
        let build = move |b: usize| shared.build(epoch, &batches[b]);
        let total = self.order.num_batches();
        Prefetch {
            workers: self.config.num_workers,
            prefetch: self.config.prefetch,
        }
        .run(total, build, &Detached)
    }
}

/// Where [`Prefetch`] starts its workers: [`Detached`] threads (the iterator owns them), or a
/// [`std::thread::Scope`] (the workers may borrow what the scope's caller owns).
pub trait Spawn<'a> {
    /// Starts `work` on a thread named `name`; returns what joins it.
    ///
    /// # Errors
    ///
    /// The thread could not be started.
    fn spawn(&self, name: String, work: Box<dyn FnOnce() + Send + 'a>) -> std::io::Result<Joiner<'a>>;
}

/// Joins one worker thread.
pub type Joiner<'a> = Box<dyn FnOnce() + 'a>;

/// Plain threads owned by the iterator: joined when it ends or is dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Detached;

impl Spawn<'static> for Detached {
    fn spawn(&self, name: String, work: Box<dyn FnOnce() + Send>) -> std::io::Result<Joiner<'static>> {
        let handle = std::thread::Builder::new().name(name).spawn(work)?;
        Ok(Box::new(move || {
            let _ = handle.join();
        }))
    }
}

impl<'scope, 'env> Spawn<'scope> for &'scope std::thread::Scope<'scope, 'env> {
    fn spawn(
        &self,
        name: String,
        work: Box<dyn FnOnce() + Send + 'scope>,
    ) -> std::io::Result<Joiner<'scope>> {
        let handle = std::thread::Builder::new().name(name).spawn_scoped(self, work)?;
        Ok(Box::new(move || {
            let _ = handle.join();
        }))
    }
}

/// kiln's one worker pool: builds batches `0..total` ahead of their consumer and yields them in
/// order. With `workers` = 0 everything runs on the calling thread (breakpoints work); otherwise
/// batch `i` is built by worker `i mod workers`, each holding at most `prefetch` finished batches,
/// so the sequence is the same for any number of workers. A failing batch ends the sequence with
/// its error; a panic becomes [`DataError::WorkerPanic`] naming the batch; dropping the iterator
/// stops and joins the workers. The [`Loader`] runs its epochs on it, and so does kiln-train's
/// training loop (batches from its own sources, on scoped threads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefetch {
    /// Worker threads (0: the calling thread).
    pub workers: usize,
    /// Finished batches each worker may hold ahead of the consumer (at least 1).
    pub prefetch: usize,
}

impl Prefetch {
    /// The batches `build(0)`, …, `build(total - 1)`, built as [`Prefetch`] says, on threads from
    /// `spawn`.
    pub fn run<'a, T, E, F, S>(self, total: usize, build: F, spawn: &S) -> LoaderIter<'a, T, E>
    where
        T: Send + 'a,
        E: From<DataError> + Send + 'a,
        F: Fn(usize) -> Result<T, E> + Send + Sync + 'a,
        S: Spawn<'a> + ?Sized,
    {
        let workers = self.workers.min(total);
        if workers == 0 {
            return Self::inline(total, build);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let build = Arc::new(build);
        let mut receivers = Vec::with_capacity(workers);
        let mut joiners: Vec<Joiner<'a>> = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel(self.prefetch.max(1));
            receivers.push(rx);
            let build = Arc::clone(&build);
            let worker_stop = Arc::clone(&stop);
            let work = Box::new(move || worker(&*build, total, w, workers, &worker_stop, &tx));
            match spawn.spawn(format!("kiln-loader-{w}"), work) {
                Ok(j) => joiners.push(j),
                Err(e) => {
                    // Could not start a thread: stop those started, report it as the first item.
                    stop.store(true, Ordering::Relaxed);
                    drop(receivers);
                    for j in joiners {
                        j();
                    }
                    return LoaderIter {
                        next: 0,
                        total,
                        source: Source::Failed(Some(
                            DataError::WorkerPanic {
                                batch: 0,
                                message: format!("cannot start loader thread {w}: {e}"),
                            }
                            .into(),
                        )),
                        finished: false,
                    };
                }
            }
        }
        LoaderIter {
            next: 0,
            total,
            source: Source::Workers {
                receivers,
                joiners,
                stop,
            },
            finished: false,
        }
    }
}

impl Prefetch {
    /// The batches `build(0)`, …, `build(total - 1)`, each built on the calling thread when it
    /// is asked for (a panic becomes [`DataError::WorkerPanic`] too).
    pub fn inline<'a, T, E, F>(total: usize, mut build: F) -> LoaderIter<'a, T, E>
    where
        F: FnMut(usize) -> Result<T, E> + 'a,
    {
        let mut next = 0;
        LoaderIter {
            next: 0,
            total,
            source: Source::Inline(Box::new(move || {
                let b = next;
                next += 1;
                (b < total).then(|| build(b))
            })),
            finished: false,
        }
    }
}

/// Worker `first` of `step`: builds batches `first, first + step, …` until the end, an error, or
/// `stop`.
fn worker<T, E: From<DataError>>(
    build: &(dyn Fn(usize) -> Result<T, E> + Send + Sync),
    total: usize,
    first: usize,
    step: usize,
    stop: &AtomicBool,
    tx: &SyncSender<Result<T, E>>,
) {
    for b in (first..total).step_by(step) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let result = catch_unwind(AssertUnwindSafe(|| build(b))).unwrap_or_else(|payload| {
            Err(DataError::WorkerPanic {
                batch: b,
                message: panic_message(payload.as_ref()),
            }
            .into())
        });
        let failed = result.is_err();
        // A send error means the consumer is gone: stop.
        if tx.send(result).is_err() || failed {
            return;
        }
    }
}

/// The text of a caught panic's payload (`&str` or `String`; a placeholder otherwise).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

type InlineNext<'a, T, E> = Box<dyn FnMut() -> Option<Result<T, E>> + 'a>;

enum Source<'a, T, E> {
    Inline(InlineNext<'a, T, E>),
    Workers {
        receivers: Vec<Receiver<Result<T, E>>>,
        joiners: Vec<Joiner<'a>>,
        stop: Arc<AtomicBool>,
    },
    Failed(Option<E>),
}

/// The batches of one epoch, in order. Ends after the last batch or after the first error.
/// `'a`: what the workers may borrow (`'static` for a [`Loader`]'s).
pub struct LoaderIter<'a, T, E = DataError> {
    next: usize,
    total: usize,
    source: Source<'a, T, E>,
    finished: bool,
}

impl<T, E> LoaderIter<'_, T, E> {
    /// Batches in this epoch (including those already yielded).
    pub fn total(&self) -> usize {
        self.total
    }
}

impl<T, E: From<DataError>> Iterator for LoaderIter<'_, T, E> {
    type Item = Result<T, E>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished || self.next >= self.total {
            return None;
        }
        let b = self.next;
        let out = match &mut self.source {
            Source::Inline(f) => {
                // Inline: a panic in user code surfaces as an error too, as it would from a worker.
                catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
                    Some(Err(DataError::WorkerPanic {
                        batch: b,
                        message: panic_message(payload.as_ref()),
                    }
                    .into()))
                })
            }
            Source::Workers { receivers, .. } => {
                let rx = &receivers[b % receivers.len()];
                Some(rx.recv().unwrap_or_else(|_| {
                    Err(DataError::WorkerPanic {
                        batch: b,
                        message: "the worker exited without sending its batch".to_string(),
                    }
                    .into())
                }))
            }
            Source::Failed(e) => e.take().map(Err),
        };
        self.next += 1;
        if !matches!(out, Some(Ok(_))) {
            self.finished = true;
            self.shutdown();
        }
        out
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = if self.finished { 0 } else { self.total - self.next };
        (0, Some(left))
    }
}

impl<T, E> LoaderIter<'_, T, E> {
    fn shutdown(&mut self) {
        if let Source::Workers {
            receivers,
            joiners,
            stop,
        } = &mut self.source
        {
            stop.store(true, Ordering::Relaxed);
            // Dropping the receivers unblocks workers waiting to send; then they see `stop`.
            receivers.clear();
            for j in joiners.drain(..) {
                j();
            }
        }
    }
}

impl<T, E> Drop for LoaderIter<'_, T, E> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::InMemory;

    /// A batcher that just returns (index, value) pairs: the batches' contents are visible.
    struct Pairs;
    impl Collate<(usize, u64)> for Pairs {
        type Batch = Vec<(usize, u64)>;
        fn collate(&self, items: Vec<Indexed<(usize, u64)>>) -> Result<Self::Batch, DataError> {
            Ok(items.into_iter().map(|s| s.item).collect())
        }
    }

    fn random_transform(i: usize, rng: &mut SampleRng) -> Result<(usize, u64), DataError> {
        Ok((i, rng.next_u64()))
    }

    fn run(workers: usize, epoch: u64) -> Vec<Vec<(usize, u64)>> {
        let cfg = LoaderConfig {
            batch_size: 7,
            num_workers: workers,
            prefetch: 1,
            ..LoaderConfig::default()
        };
        let loader = Loader::new(InMemory::new((0..50).collect()), random_transform, Pairs, cfg).unwrap();
        loader.epoch(epoch).collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn identical_batches_for_any_number_of_workers() {
        let reference = run(0, 3);
        assert_eq!(reference.len(), 8);
        assert_eq!(reference.iter().map(Vec::len).sum::<usize>(), 50);
        for workers in [1, 2, 3, 5, 16] {
            assert_eq!(run(workers, 3), reference, "{workers} workers");
        }
        assert_ne!(
            run(2, 4),
            reference,
            "another epoch, another order and other random draws"
        );
        // The random draw belongs to the sample, not to its position in the epoch.
        let e4: std::collections::HashMap<usize, u64> = run(0, 4).concat().into_iter().collect();
        let e3: std::collections::HashMap<usize, u64> = reference.concat().into_iter().collect();
        assert!(e3.iter().all(|(i, v)| e4[i] != *v));
    }

    #[test]
    fn a_failing_sample_is_an_error_naming_it_and_ends_the_epoch() {
        for workers in [0, 3] {
            let cfg = LoaderConfig {
                batch_size: 4,
                shuffle: false,
                num_workers: workers,
                ..LoaderConfig::default()
            };
            let t = |i: usize, _: &mut SampleRng| {
                if i == 9 {
                    Err(DataError::Custom("cannot decode /data/9.jpg".into()))
                } else {
                    Ok((i, 0))
                }
            };
            let loader = Loader::new(InMemory::new((0..20).collect()), t, Pairs, cfg).unwrap();
            let results: Vec<_> = loader.iter().collect();
            assert_eq!(
                results.len(),
                3,
                "two good batches, the error, then the end ({workers} workers)"
            );
            assert!(results[0].is_ok() && results[1].is_ok());
            let msg = results[2].as_ref().unwrap_err().to_string();
            assert_eq!(msg, "sample 9: cannot decode /data/9.jpg");
        }
    }

    #[test]
    fn a_panicking_transform_becomes_an_error_not_a_hang() {
        for workers in [0, 2] {
            let cfg = LoaderConfig {
                batch_size: 5,
                shuffle: false,
                num_workers: workers,
                ..LoaderConfig::default()
            };
            let t = |i: usize, _: &mut SampleRng| {
                assert!(i != 12, "boom at 12");
                Ok((i, 0))
            };
            let loader = Loader::new(InMemory::new((0..30).collect()), t, Pairs, cfg).unwrap();
            let results: Vec<_> = loader.iter().collect();
            assert_eq!(results.len(), 3);
            let err = results[2].as_ref().unwrap_err();
            assert!(
                matches!(err, DataError::WorkerPanic { batch: 2, message } if message.contains("boom at 12")),
                "{err:?}"
            );
        }
    }

    #[test]
    fn dropping_the_iterator_stops_the_workers() {
        use std::sync::atomic::AtomicUsize;
        let built = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&built);
        let t = move |i: usize, _: &mut SampleRng| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok((i, 0))
        };
        let cfg = LoaderConfig {
            batch_size: 1,
            num_workers: 2,
            prefetch: 1,
            ..LoaderConfig::default()
        };
        let loader = Loader::new(InMemory::new((0..10_000).collect()), t, Pairs, cfg).unwrap();
        let mut it = loader.iter();
        assert!(it.next().unwrap().is_ok());
        drop(it); // joins the workers: returns only once they have stopped
        let after = built.load(Ordering::Relaxed);
        // Bounded prefetch: each worker holds at most 1 batch plus the one it is building.
        assert!(after <= 1 + 2 * 2 + 2, "built {after} samples before stopping");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            built.load(Ordering::Relaxed),
            after,
            "nothing runs after the drop"
        );
    }

    #[test]
    fn drop_last_and_zero_batch_size() {
        let cfg = LoaderConfig {
            batch_size: 4,
            drop_last: true,
            num_workers: 0,
            ..LoaderConfig::default()
        };
        let loader = Loader::new(
            InMemory::new((0..10).collect()),
            random_transform,
            Pairs,
            cfg.clone(),
        )
        .unwrap();
        assert_eq!(loader.num_batches(), 2);
        assert!(loader.iter().all(|b| b.unwrap().len() == 4));
        let zero = LoaderConfig { batch_size: 0, ..cfg };
        assert!(matches!(
            Loader::new(InMemory::new(vec![0usize]), random_transform, Pairs, zero),
            Err(DataError::ZeroBatchSize)
        ));
    }
}
