"""Data-parallel training: the same script on 1 or N processes.

    pip install "fastgrad[mpi]"
    mpiexec -n 2 python examples/distributed_train.py

batch_size is the global batch (each rank computes batch_size / N rows); the
progress bar and the checkpoint are written by rank 0 only; every rank ends with
the same weights (docs/distributed.md)."""
import numpy as np

import fastgrad as fg

fg.distribution.set_distribution(fg.distribution.DataParallel())
rank, n = fg.distribution.rank(), fg.distribution.world_size()

rng = np.random.default_rng(0)                 # the same data on every rank
x = rng.standard_normal((4096, 64)).astype(np.float32)
y = (x[:, :8].sum(axis=1) > 0).astype(np.int64) + 2 * (x[:, 8:16].sum(axis=1) > 0)

fg.set_seed(1)
model = fg.Sequential([fg.layers.Input((64,)), fg.layers.Dense(128, activation="relu"),
                       fg.layers.Dense(4, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
hist = model.fit(x, y, batch_size=128, epochs=5, validation_split=0.1,
                 callbacks=[fg.callbacks.ModelCheckpoint("distributed_train.fgm")])
loss, acc = model.evaluate(x, y, verbose=0)
print(f"rank {rank} of {n}: evaluate loss {loss:.4f} accuracy {acc:.3f}, "
      f"weights checksum {float(np.abs(model.flat_params).sum()):.6f}")
