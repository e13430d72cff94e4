"""Subprocess of test_multihost.py: one of two processes joined by jax.distributed on CPU.

    python multihost_worker.py PROCESS_ID PORT DATA_DIR OUT_DIR

Each process has 2 CPU devices (4 in all), feeds its own half of the global batch, takes one
pmap train step, saves a checkpoint together with the other process, and writes its copy of
the parameters to OUT_DIR/params_<id>.npz.
"""
import os
import sys

# Alone: these flags; under test_multihost.py, the session's flags with 2 devices per process
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2 "
                                   "--xla_backend_optimization_level=0")


def main(process_id: int, port: int, data_dir: str, out_dir: str) -> None:
    from pisa_jax.train.distributed import initialize
    assert initialize(f"127.0.0.1:{port}", 2, process_id)
    import jax
    import numpy as np

    from pisa_jax.data.dataset import open_dataset
    from pisa_jax.data.pipeline import prefetch_to_device, train_batches
    from pisa_jax.train import preset
    from pisa_jax.train.checkpoints import Checkpoints
    from pisa_jax.train.distributed import check_batch_split, replicate, unreplicate_to_host
    from pisa_jax.train.state import InputSpec, create_run
    from pisa_jax.train.steps import make_train_step
    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)

    config = preset("smoke", data_dir=data_dir)
    check_batch_split(config.batch_size)
    dataset = open_dataset("synthetic_tiny", data_dir)
    run = create_run(config, InputSpec.of_dataset(dataset))
    batches = train_batches(dataset.train, global_batch_size=config.batch_size,
                            num_local_devices=jax.local_device_count(), seed=0, epoch=0)
    train_step = make_train_step(run.model, run.tx, config)
    state, metrics = train_step(replicate(run.initial_state(), donated=True),  # as the loop does
                                next(prefetch_to_device(batches)))
    host = unreplicate_to_host(state)
    leaves = jax.tree_util.tree_flatten_with_path(host.params)[0]
    np.savez(os.path.join(out_dir, f"params_{process_id}.npz"),
             **{jax.tree_util.keystr(p): v for p, v in leaves},
             loss=np.asarray(jax.device_get(metrics["loss"]))[0])

    checkpoints = Checkpoints(os.path.join(out_dir, "workdir"))  # both processes take part
    checkpoints.save(host, {"epoch": 0})
    checkpoints.wait()
    restored, _, _ = checkpoints.restore(run.template)
    checkpoints.close()
    assert int(restored.step) == 1
    jax.tree_util.tree_map(np.testing.assert_array_equal, restored.params, host.params)
    print(f"process {process_id}: ok")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
