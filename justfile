# kiln's everyday commands. `just ci` is exactly what CI runs.

export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") + "/.cache/kiln-target")

# Train the reference CNN on the vendored Fashion-MNIST subset (the main job).
run *ARGS:
    cargo run --release -- {{ARGS}}

# Train on the full Fashion-MNIST from Debian's dataset-fashion-mnist package.
run-full *ARGS:
    cargo run --release -- --data /usr/share/datasets/fashion-mnist {{ARGS}}

# The whole test suite.
test:
    cargo test --workspace

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# The crates on their own: packaged, tested with their own features, docs, examples/standalone.
crates:
    bash .ci/crates

# Training across processes: the 2-rank tests under mpirun (needs libopenmpi-dev openmpi-bin
# libclang-dev; docs/distributed.md).
mpi:
    cargo test -p kiln --features mpi --test mpi -- --nocapture

# Exactly what CI runs.
ci:
    bash .ci/run

# Throughput next to the PyTorch peers on the same machine: the zoo models with kiln's flex kernels
# on and off (training, inference, peak RSS), training on the real Fashion-MNIST (needs `pip
# install torch numpy torchvision`), and the JPEG input pipeline (needs `pip install torch
# torchvision pillow scikit-learn`), and 2 MPI ranks against 1 process (needs an MPI library).
# Medians of 3 (5 for the pipeline).
bench:
    bash bench/models.sh
    bash bench/fmnist.sh
    bash bench/pipeline.sh
    bash bench/onnx.sh
    bash bench/mpi.sh
