//! Training across processes: several processes (MPI ranks, one machine or many) train one model.
//!
//! Every rank runs the same run. Each global batch of the seeded order (`batch_size` samples) is
//! cut into `size` contiguous shards, one per rank, so every rank reads and augments only its
//! own samples; each rank's loss is scaled by `1/size`, and the gradients are summed over the
//! ranks ([`Cluster::sum_f32`], `MPI_Allreduce` under MPI), so every rank steps the same
//! optimizer on the same averaged gradients and the weights stay equal without being sent.
//! Each step's loss and sample counts are summed the same way, and each epoch's training
//! statistics are gathered, so rank 0 reports the figures one process would.
//!
//! Rank 0 evaluates, logs, writes checkpoints and the report; the others train and stay silent.
//! Rank 0 tells the others when early stopping ends the run. On resume, every rank loads the
//! latest checkpoint rank 0 wrote (the run folder must be on a file system all ranks see).
//!
//! BatchNorm normalises with each rank's own shard statistics (as PyTorch's DDP without
//! `SyncBatchNorm`); rank 0's running statistics are the ones evaluated and saved.
//!
//! The [`Cluster`] trait is the only thing the loop needs: `mpi::MpiCluster` (cargo
//! feature `mpi`) implements it over MPI, [`LocalCluster`] over threads of one process (tests).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorData;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::TrainError;

/// Processes that train one model together, each knowing its rank.
///
/// Every method is collective: all ranks call it, in the same order, with buffers of the same
/// length.
pub trait Cluster: std::fmt::Debug {
    /// This process's rank, `0..size`. Rank 0 evaluates and writes.
    fn rank(&self) -> usize;

    /// Number of processes.
    fn size(&self) -> usize;

    /// `values` summed element-wise over the ranks, in place on every rank.
    ///
    /// # Errors
    ///
    /// A rank that left.
    fn sum_f32(&self, values: &mut [f32]) -> Result<(), TrainError>;

    /// As [`Cluster::sum_f32`], for `f64`.
    ///
    /// # Errors
    ///
    /// A rank that left.
    fn sum_f64(&self, values: &mut [f64]) -> Result<(), TrainError>;

    /// Rank 0's `values`, copied into every rank's `values`.
    ///
    /// # Errors
    ///
    /// A rank that left.
    fn broadcast_f64(&self, values: &mut [f64]) -> Result<(), TrainError>;

    /// As [`Cluster::broadcast_f64`], for `f32`.
    ///
    /// # Errors
    ///
    /// A rank that left.
    fn broadcast_f32(&self, values: &mut [f32]) -> Result<(), TrainError>;

    /// Every rank's `bytes` (of any length), in rank order, on every rank.
    ///
    /// # Errors
    ///
    /// A rank that left.
    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, TrainError>;
}

/// Ranks as threads of one process: `LocalCluster::group(n)` gives one handle per rank, each to
/// be moved to its own thread. The arithmetic of training across processes without MPI (the
/// tests use it); a rank whose handle is dropped makes the others' next call an error rather
/// than a hang.
#[derive(Debug)]
pub struct LocalCluster {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<Exchange>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Exchange {
    /// Each rank's contribution to the current exchange.
    slots: Vec<Option<Vec<u8>>>,
    /// Completed exchanges; a rank waits for this to move.
    generation: u64,
    /// The last completed exchange's contributions.
    done: Vec<Vec<u8>>,
    /// Ranks whose handle was dropped.
    left: Vec<usize>,
}

impl LocalCluster {
    /// `size` handles, rank 0 first.
    pub fn group(size: usize) -> Vec<LocalCluster> {
        let shared = Arc::new(Shared {
            state: Mutex::new(Exchange {
                slots: vec![None; size],
                ..Exchange::default()
            }),
            changed: Condvar::new(),
        });
        (0..size)
            .map(|rank| LocalCluster {
                rank,
                size,
                shared: Arc::clone(&shared),
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Exchange> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn left_error(&self, left: &[usize]) -> TrainError {
        TrainError::RankFailed {
            rank: left[0],
            reason: format!(
                "rank {} left the group while rank {} waited for it",
                left[0], self.rank
            ),
        }
    }

    /// Every rank's bytes once all have given theirs.
    fn exchange(&self, mine: Vec<u8>) -> Result<Vec<Vec<u8>>, TrainError> {
        let mut state = self.lock();
        if !state.left.is_empty() {
            return Err(self.left_error(&state.left));
        }
        let generation = state.generation;
        state.slots[self.rank] = Some(mine);
        if state.slots.iter().all(Option::is_some) {
            state.done = state
                .slots
                .iter_mut()
                .map(|s| s.take().unwrap_or_default())
                .collect();
            state.generation += 1;
            self.shared.changed.notify_all();
            return Ok(state.done.clone());
        }
        while state.generation == generation {
            if !state.left.is_empty() {
                return Err(self.left_error(&state.left));
            }
            state = self.shared.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        Ok(state.done.clone())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let mut state = self.lock();
        state.left.push(self.rank);
        self.shared.changed.notify_all();
    }
}

/// A number as the threads of a [`LocalCluster`] exchange it: little-endian bytes.
trait Wire: Copy + Default + std::ops::Add<Output = Self> {
    const SIZE: usize;
    fn put(self, out: &mut Vec<u8>);
    fn take(bytes: &[u8]) -> Self;
}

impl Wire for f32 {
    const SIZE: usize = 4;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn take(bytes: &[u8]) -> Self {
        <[u8; 4]>::try_from(bytes).map_or(0.0, f32::from_le_bytes)
    }
}

impl Wire for f64 {
    const SIZE: usize = 8;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn take(bytes: &[u8]) -> Self {
        <[u8; 8]>::try_from(bytes).map_or(0.0, f64::from_le_bytes)
    }
}

impl LocalCluster {
    /// Every rank's `values`, as sent.
    fn exchange_values<T: Wire>(&self, values: &[T]) -> Result<Vec<Vec<u8>>, TrainError> {
        let mut bytes = Vec::with_capacity(values.len() * T::SIZE);
        for &v in values {
            v.put(&mut bytes);
        }
        self.exchange(bytes)
    }

    /// Element `i` of a rank's values.
    fn nth<T: Wire>(bytes: &[u8], i: usize) -> T {
        bytes
            .get(i * T::SIZE..(i + 1) * T::SIZE)
            .map_or_else(T::default, T::take)
    }

    /// Element-wise sums, in rank order (as MPI's reduction of two ranks, a + b).
    fn sum<T: Wire>(&self, values: &mut [T]) -> Result<(), TrainError> {
        let all = self.exchange_values(values)?;
        for (i, v) in values.iter_mut().enumerate() {
            *v = all
                .iter()
                .map(|b| Self::nth(b, i))
                .fold(T::default(), |acc, x| acc + x);
        }
        Ok(())
    }

    /// Rank 0's values on every rank.
    fn broadcast<T: Wire>(&self, values: &mut [T]) -> Result<(), TrainError> {
        let all = self.exchange_values(values)?;
        for (i, v) in values.iter_mut().enumerate() {
            *v = Self::nth(&all[0], i);
        }
        Ok(())
    }
}

impl Cluster for LocalCluster {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn sum_f32(&self, values: &mut [f32]) -> Result<(), TrainError> {
        self.sum(values)
    }

    fn sum_f64(&self, values: &mut [f64]) -> Result<(), TrainError> {
        self.sum(values)
    }

    fn broadcast_f64(&self, values: &mut [f64]) -> Result<(), TrainError> {
        self.broadcast(values)
    }

    fn broadcast_f32(&self, values: &mut [f32]) -> Result<(), TrainError> {
        self.broadcast(values)
    }

    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, TrainError> {
        self.exchange(bytes.to_vec())
    }
}

/// Refuses a global batch that does not split evenly over the ranks (and each rank's share over
/// its `devices`).
pub(crate) fn check_batch_size(
    cluster: &dyn Cluster,
    batch_size: usize,
    devices: usize,
) -> Result<(), TrainError> {
    let n = cluster.size() * devices.max(1);
    if !batch_size.is_multiple_of(n) {
        let what = if devices > 1 {
            format!("{} processes × {devices} devices", cluster.size())
        } else {
            format!("{} processes", cluster.size())
        };
        return Err(TrainError::InvalidConfig {
            field: "batch_size",
            value: batch_size.to_string(),
            reason: format!(
                "the global batch must split evenly over the {what} (e.g. {}); each takes batch_size / {n} samples a step",
                (batch_size / n).max(1) * n
            ),
        });
    }
    Ok(())
}

/// This rank's contiguous shard of a global batch's positions.
pub(crate) fn shard(positions: &[usize], rank: usize, size: usize) -> Vec<usize> {
    let per = positions.len() / size;
    positions[rank * per..(rank + 1) * per].to_vec()
}

/// Sums `grads` over the ranks (each rank's loss was already scaled by 1/size, so the sum is the
/// average). Parameters are visited in the model's order, which is the same on every rank; a
/// parameter some ranks have no gradient for counts as zero there, and one no rank has a
/// gradient for stays without one (the optimizer leaves it alone, as on one process). Returns
/// the number of floats summed.
pub(crate) fn sum_grads<M: Module>(
    cluster: &dyn Cluster,
    model: &M,
    grads: &mut GradientsParams,
    device: &Device,
) -> Result<usize, TrainError> {
    struct Flatten<'a> {
        grads: &'a GradientsParams,
        values: Vec<f32>,
        present: Vec<f32>,
    }
    impl ModuleVisitor for Flatten<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if !param.val().is_require_grad() {
                return;
            }
            match self.grads.get::<D>(param.id) {
                Some(g) => {
                    let data = g.into_data();
                    // A plain copy for f32 (the common case); element-wise conversion otherwise.
                    match data.as_slice::<f32>() {
                        Ok(slice) => self.values.extend_from_slice(slice),
                        Err(_) => self.values.extend(data.iter::<f32>()),
                    }
                    self.present.push(1.0);
                }
                None => {
                    let n = param.lazy_shape().num_elements();
                    self.values.extend(std::iter::repeat_n(0.0, n));
                    self.present.push(0.0);
                }
            }
        }
    }
    struct Rebuild<'a> {
        grads: &'a mut GradientsParams,
        values: &'a [f32],
        present: &'a [f32],
        offset: usize,
        index: usize,
        device: &'a Device,
    }
    impl ModuleVisitor for Rebuild<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if !param.val().is_require_grad() {
                return;
            }
            let shape = param.lazy_shape();
            let n = shape.num_elements();
            let values = &self.values[self.offset..self.offset + n];
            self.offset += n;
            let present = self.present[self.index] > 0.0;
            self.index += 1;
            self.grads.remove::<D>(param.id);
            if present {
                let data = TensorData::new(values.to_vec(), shape);
                self.grads
                    .register(param.id, Tensor::<D>::from_data(data, self.device));
            }
        }
    }
    let mut flat = Flatten {
        grads,
        values: Vec::new(),
        present: Vec::new(),
    };
    model.visit(&mut flat);
    let Flatten {
        mut values,
        mut present,
        ..
    } = flat;
    let split = values.len();
    values.append(&mut present);
    let floats = values.len();
    cluster.sum_f32(&mut values)?;
    let (values, present) = values.split_at(split);
    model.visit(&mut Rebuild {
        grads,
        values,
        present,
        offset: 0,
        index: 0,
        device,
    });
    Ok(floats)
}

/// `model` with rank 0's parameters on every rank, as PyTorch's DDP broadcasts them at its start:
/// the ranks then train the same weights even if their initialisation differed (another seed,
/// device or backend).
pub(crate) fn same_weights<M: Module>(cluster: &dyn Cluster, model: M) -> Result<M, TrainError> {
    struct Flatten(Vec<f32>);
    impl ModuleVisitor for Flatten {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let data = param.val().into_data();
            match data.as_slice::<f32>() {
                Ok(slice) => self.0.extend_from_slice(slice),
                Err(_) => self.0.extend(data.iter::<f32>()),
            }
        }
    }
    struct Replace<'a> {
        values: &'a [f32],
        offset: usize,
    }
    impl ModuleMapper for Replace<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, tensor, mapper) = param.consume();
            let shape = tensor.shape();
            let n = shape.num_elements();
            let values = &self.values[self.offset..self.offset + n];
            self.offset += n;
            let grad = tensor.is_require_grad();
            let data = TensorData::new(values.to_vec(), shape);
            let replaced = Tensor::<D>::from_data(data, &tensor.device()).set_require_grad(grad);
            Param::from_mapped_value(id, replaced, mapper)
        }
    }
    let mut flat = Flatten(Vec::new());
    model.visit(&mut flat);
    let mut values = flat.0;
    cluster.broadcast_f32(&mut values)?;
    Ok(model.map(&mut Replace {
        values: &values,
        offset: 0,
    }))
}

/// Every rank's `stats`, merged by `merge` in rank order (the same result on every rank).
pub(crate) fn gather_stats<S: Serialize + DeserializeOwned + Default>(
    cluster: &dyn Cluster,
    stats: S,
    mut merge: impl FnMut(&mut S, S),
) -> Result<S, TrainError> {
    let encode = |e: serde_json::Error| TrainError::RankFailed {
        rank: cluster.rank(),
        reason: format!("training statistics could not be exchanged: {e}"),
    };
    let mine = serde_json::to_vec(&stats).map_err(encode)?;
    let mut merged = S::default();
    for bytes in cluster.all_gather_bytes(&mine)? {
        merge(&mut merged, serde_json::from_slice(&bytes).map_err(encode)?);
    }
    Ok(merged)
}

/// What must be the same on every rank, by name (e.g. the resolved run file, the data's
/// fingerprint, the kiln version): each is hashed, the hashes are compared with rank 0's, and
/// a rank that differs is named.
///
/// # Errors
///
/// [`TrainError::RanksDiffer`] on every rank when any rank's part differs from rank 0's.
pub fn check_same_run(cluster: &dyn Cluster, parts: &[(&str, String)]) -> Result<(), TrainError> {
    let hashes: Vec<u8> = parts
        .iter()
        .flat_map(|(_, v)| fnv1a(v.as_bytes()).to_le_bytes())
        .collect();
    let all = cluster.all_gather_bytes(&hashes)?;
    for (rank, theirs) in all.iter().enumerate().skip(1) {
        if theirs != &all[0] {
            let what: Vec<&str> = parts
                .iter()
                .enumerate()
                .filter(|(i, _)| theirs.get(i * 8..i * 8 + 8) != all[0].get(i * 8..i * 8 + 8))
                .map(|(_, (name, _))| *name)
                .collect();
            return Err(TrainError::RanksDiffer {
                rank,
                what: if what.is_empty() {
                    "the run".into()
                } else {
                    what.join(", ")
                },
            });
        }
    }
    Ok(())
}

/// 64-bit FNV-1a: a stable hash (std's `DefaultHasher` may change between Rust releases, and
/// ranks may run binaries built apart).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The rank and size a launcher (`mpirun` of Open MPI or MPICH, Slurm's `srun`) gave this
/// process, read from its environment; `None` when none did (or it started one process).
///
/// A binary built without the `mpi` feature uses it to refuse to train N separate copies.
pub fn launched_as() -> Option<(usize, usize)> {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<usize>().ok());
    [
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("PMI_RANK", "PMI_SIZE"),
        ("PMIX_RANK", "PMIX_SIZE"),
        // The step's task count: a batch script (no srun) sees SLURM_NTASKS of the whole job.
        ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS"),
    ]
    .iter()
    .find_map(|(r, s)| Some((var(r)?, var(s)?)))
    .filter(|&(_, size)| size > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_ranks_sum_broadcast_and_gather() {
        // Each rank's sum (f32), sum (f64), broadcast and gather.
        type Seen = (Vec<f32>, Vec<f64>, Vec<f64>, Vec<Vec<u8>>);
        let results: Vec<Seen> = std::thread::scope(|s| {
            let handles: Vec<_> = LocalCluster::group(3)
                .into_iter()
                .map(|c| {
                    s.spawn(move || {
                        let r = c.rank() as f32;
                        let mut a = vec![r, 10.0 * r];
                        c.sum_f32(&mut a).unwrap();
                        let mut b = vec![f64::from(r) + 0.5];
                        c.sum_f64(&mut b).unwrap();
                        let mut d = vec![f64::from(r) + 7.0; 2];
                        c.broadcast_f64(&mut d).unwrap();
                        let g = c.all_gather_bytes(&vec![c.rank() as u8; c.rank()]).unwrap();
                        (a, b, d, g)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (a, b, d, g) in results {
            assert_eq!(a, vec![3.0, 30.0]);
            assert_eq!(b, vec![4.5]);
            assert_eq!(d, vec![7.0, 7.0]);
            assert_eq!(g, vec![vec![], vec![1], vec![2, 2]]);
        }
    }

    #[test]
    fn a_rank_that_leaves_is_an_error_not_a_hang() {
        let mut group = LocalCluster::group(2);
        let gone = group.pop().unwrap();
        let waiting = group.pop().unwrap();
        let t = std::thread::spawn(move || waiting.sum_f64(&mut [1.0]).map_err(|e| e.to_string()));
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(gone);
        let err = t.join().unwrap().unwrap_err();
        assert!(err.contains("rank 1 left"), "{err}");
    }

    #[test]
    fn differing_ranks_are_named() {
        let out: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = LocalCluster::group(3)
                .into_iter()
                .map(|c| {
                    s.spawn(move || {
                        let data = if c.rank() == 2 { "other" } else { "same" };
                        let parts = [("config", "a".to_string()), ("data", data.to_string())];
                        check_same_run(&c, &parts).map_or_else(|e| e.to_string(), |()| "ok".into())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for msg in out {
            assert!(
                msg.contains("rank 2") && msg.contains("data") && !msg.contains("config"),
                "{msg}"
            );
        }
    }

    #[test]
    fn shards_are_contiguous_and_batch_sizes_must_split() {
        let p: Vec<usize> = (10..18).collect();
        assert_eq!(shard(&p, 0, 2), vec![10, 11, 12, 13]);
        assert_eq!(shard(&p, 1, 2), vec![14, 15, 16, 17]);
        let group = LocalCluster::group(3);
        let err = check_batch_size(&group[0], 32, 1).unwrap_err().to_string();
        assert!(err.contains("3 processes (e.g. 30)"), "{err}");
        assert!(check_batch_size(&group[0], 30, 1).is_ok());
        let err = check_batch_size(&group[0], 33, 2).unwrap_err().to_string();
        assert!(err.contains("3 processes × 2 devices (e.g. 30)"), "{err}");
        assert!(check_batch_size(&group[0], 36, 2).is_ok());
    }
}
