"""Several hosts on one machine: two processes on loopback (CPU backend, gloo
collectives) run ``launch/distill.py`` as a 2-host job: the steps' class axis spans
both processes, only process 0 writes the workdir, and the result equals the
one-process run. Plus the environment parsing of ``gold.parallel``."""

import csv
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from gold import parallel

RUN = {"model.width": 8, "batch_real": 16, "dsa_strategy": "none", "iterations": 2, "log_every": 1,
       "checkpoint_every": 1, "data.train_per_class": 12, "data.test_per_class": 5,
       "eval.num_models": 2, "eval.epochs": 1, "eval.model": "mlp"}


def test_distributed_settings_from_the_environment():
    assert parallel.distributed_settings({}) is None
    env = {parallel.ENV_COORDINATOR: "10.0.0.1:1234", parallel.ENV_NUM_PROCESSES: "4",
           parallel.ENV_PROCESS_ID: "3"}
    assert parallel.distributed_settings(env) == {
        "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
    with pytest.raises(ValueError, match="needs integer JAX_NUM_PROCESSES and JAX_PROCESS_ID"):
        parallel.distributed_settings({parallel.ENV_COORDINATOR: "h:1"})
    with pytest.raises(ValueError, match=r"JAX_PROCESS_ID=4 must be in \[0, JAX_NUM_PROCESSES=4\)"):
        parallel.distributed_settings({**env, parallel.ENV_PROCESS_ID: "4"})
    assert parallel.initialize_distributed({}) is False and parallel.is_main_process()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_on_loopback_equal_one_process(tmp_path):
    from gold.configs import dm as dm_config
    from gold.distill import artifacts, loop

    workdir = tmp_path / "two_hosts"
    args = [sys.executable, "launch/distill.py", "--config=configs/dm.py:digits", f"--workdir={workdir}",
            *[f"--config.{k}={v}" for k, v in RUN.items()]]
    port = _free_port()
    procs = []
    for i in range(2):
        env = {**os.environ, "JAX_PLATFORMS": "cpu",
               parallel.ENV_COORDINATOR: f"localhost:{port}", parallel.ENV_NUM_PROCESSES: "2",
               parallel.ENV_PROCESS_ID: str(i)}
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    logs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs[0][-3000:] + logs[1][-3000:]
    assert "on 2 cpu devices" in logs[0]  # one global mesh over both processes
    assert "device memory:" in logs[0] and "device memory:" not in logs[1]  # process 0 logs

    cfg = dm_config.get_config("digits")
    cfg.update_from_flattened_dict(RUN)
    one = loop.run(cfg, str(tmp_path / "one_host"))
    syn2 = artifacts.load_synthetic(os.path.join(workdir, "synthetic.npz"))
    syn1 = artifacts.load_synthetic(os.path.join(tmp_path, "one_host", "synthetic.npz"))
    np.testing.assert_allclose(syn2.x, syn1.x, atol=1e-5)
    rows = [r for r in csv.DictReader(open(workdir / "metrics.csv")) if r["loss"]]
    assert [r["step"] for r in rows] == ["1", "2"]  # one writer: no duplicated rows
    assert abs(float(rows[-1]["loss"]) - one["final_loss"]) <= 1e-5
