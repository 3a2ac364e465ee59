//! [`Cluster`] over MPI (cargo feature `mpi`): the ranks `mpirun -np N` or Slurm's `srun` started.
//!
//! Needs an MPI library at build and run time (Open MPI or MPICH; on Debian `libopenmpi-dev
//! openmpi-bin`, and `libclang-dev` for the bindings). MPI is initialised once per process, in
//! [`MpiCluster::init`], and finalised when the cluster is dropped. Only the thread that made it
//! calls MPI (`MPI_THREAD_FUNNELED`); the data workers and replicas never do.

use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use crate::TrainError;
use crate::cluster::Cluster;

/// This process's place among the ranks of `MPI_COMM_WORLD`.
pub struct MpiCluster {
    world: SimpleCommunicator,
    // Finalises MPI when dropped; declared last so the communicator goes first.
    _universe: Universe,
}

impl std::fmt::Debug for MpiCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiCluster")
            .field("rank", &self.world.rank())
            .field("size", &self.world.size())
            .finish()
    }
}

impl MpiCluster {
    /// Initialises MPI and joins `MPI_COMM_WORLD`.
    ///
    /// # Errors
    ///
    /// [`TrainError::RankFailed`] when MPI was initialised already in this process, or the
    /// library cannot give the thread level kiln needs.
    pub fn init() -> Result<Self, TrainError> {
        let failed = |reason: String| TrainError::RankFailed { rank: 0, reason };
        let (universe, level) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| failed("MPI was initialised already in this process".into()))?;
        if level < mpi::Threading::Funneled {
            return Err(failed(format!(
                "the MPI library gives thread level {level:?}; kiln needs Funneled (only the main thread calls MPI)"
            )));
        }
        Ok(Self {
            world: universe.world(),
            _universe: universe,
        })
    }

    /// Ends every rank of the job now (`MPI_Abort`): after an error on one rank, the others
    /// would otherwise wait for it forever. The launcher exits with `code`.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    /// The MPI library's version string (`Open MPI v4.1.4, ...`).
    pub fn library_version() -> String {
        mpi::environment::library_version().unwrap_or_else(|_| "unknown MPI library".into())
    }
}

impl Cluster for MpiCluster {
    fn rank(&self) -> usize {
        usize::try_from(self.world.rank()).unwrap_or(0)
    }

    fn size(&self) -> usize {
        usize::try_from(self.world.size()).unwrap_or(1)
    }

    // MPI's default error handler (MPI_ERRORS_ARE_FATAL) ends the job on a communication error,
    // so these calls return only on success.
    fn sum_f32(&self, values: &mut [f32]) -> Result<(), TrainError> {
        let send = values.to_vec();
        self.world
            .all_reduce_into(&send[..], values, SystemOperation::sum());
        Ok(())
    }

    fn sum_f64(&self, values: &mut [f64]) -> Result<(), TrainError> {
        let send = values.to_vec();
        self.world
            .all_reduce_into(&send[..], values, SystemOperation::sum());
        Ok(())
    }

    fn broadcast_f64(&self, values: &mut [f64]) -> Result<(), TrainError> {
        self.world.process_at_rank(0).broadcast_into(values);
        Ok(())
    }

    fn broadcast_f32(&self, values: &mut [f32]) -> Result<(), TrainError> {
        self.world.process_at_rank(0).broadcast_into(values);
        Ok(())
    }

    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, TrainError> {
        let too_long = || TrainError::RankFailed {
            rank: self.rank(),
            reason: format!("{} bytes to exchange, more than MPI counts", bytes.len()),
        };
        let len = i32::try_from(bytes.len()).map_err(|_| too_long())?;
        let mut lens = vec![0i32; self.size()];
        self.world.all_gather_into(&len, &mut lens[..]);
        let displs: Vec<i32> = lens
            .iter()
            .scan(0i32, |at, &n| {
                let d = *at;
                *at = at.saturating_add(n);
                Some(d)
            })
            .collect();
        let total: usize = lens.iter().map(|&n| usize::try_from(n).unwrap_or(0)).sum();
        let mut all = vec![0u8; total];
        {
            let mut partition = PartitionMut::new(&mut all[..], &lens[..], &displs[..]);
            self.world.all_gather_varcount_into(bytes, &mut partition);
        }
        let mut out = Vec::with_capacity(lens.len());
        let mut rest = &all[..];
        for &n in &lens {
            let (head, tail) = rest.split_at(usize::try_from(n).unwrap_or(0));
            out.push(head.to_vec());
            rest = tail;
        }
        Ok(out)
    }
}
