"""Every registered algorithm runs unchanged on a mesh: one step through the run loop's
jit site on 4 forced CPU devices equals the same step on one device.

One subprocess (``test_parallel.run_on_four_devices``) builds each algorithm at the
contract test's tiny setting (``test_contract.tiny_config``: digits, width 8, IPC 1;
MTT and HaBa read a fake 2-epoch expert buffer, ``test_mtt.write_fake_buffer``) on 8
digits per class, and runs one step with ``loop.chunk_program`` twice: with the mesh
the loop would use (``loop.step_mesh``: DC / DSA / DM split their per-class loop over
``class=2`` x ``data=2``, the others run replicated on ``data=4``) and with no mesh
(the plain jitted program on one device). The whole state after the step (synthetic
parameters, optimiser state, extra state such as net pools and extractors), the
decoded images, labels and learned lr, and the loss must agree within 1e-5.

Compilation is nearly all of the cost (two programs per algorithm), so the programs
are kept small: an MLP and no augmentation wherever the algorithm allows it and the
point is not the check itself (:data:`CONVNET`), and XLA's cheapest CPU code
generation (the suite's ``XLA_FLAGS``, conftest.py), which both runs share.
"""

import json
import textwrap

import pytest

from gold.distill import common, registry
from test_parallel import run_on_four_devices

ALGORITHMS = registry.names()
TOL = 1e-5
# ConvNet and the config's augmentation: the class-split algorithms (their per-device
# program is what differs) and those that need a ConvNet (CAFE's layer taps, FRePo's and
# RFAD's kernels; IDC matches conv-kernel gradients only, so an MLP gives it no loss)
CONVNET = ("cafe", "dc", "dm", "dsa", "frepo", "idc", "rfad")

EVERY_ALGORITHM = textwrap.dedent(r'''
    import json, sys, tempfile, time
    import jax, numpy as np
    sys.path.insert(0, "tests")
    from test_contract import tiny_config
    from test_mtt import write_fake_buffer
    from gold import data as gdata, parallel, rng
    from gold.distill import common, loop, registry

    assert jax.device_count() == 4, jax.devices()
    convnet = json.loads(sys.argv[1])
    ds = gdata.load_dataset("digits", train_per_class=8, test_per_class=1, strict_counts=False)
    root = rng.root(0)

    def host(tree):  # every leaf as float64 on the host (PRNG keys as their key data)
        unkey = lambda a: jax.random.key_data(a) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else a
        return [np.asarray(unkey(a), np.float64) for a in jax.tree.leaves(tree)]

    def diff(a, b):  # max |a - b| over the leaves of two pytrees of one structure
        return max([float(np.max(np.abs(u - v), initial=0.0)) for u, v in zip(host(a), host(b))] or [0.0])

    def one_step(algo, init, real, mesh):  # the loop's jit site (loop.chunk_program), one step
        state = init(rng.stream(root, "init"), real)
        x0 = np.asarray(algo.synthetic(state).x)
        advance, state, key, real = loop.chunk_program(algo, mesh, state, rng.stream(root, "steps"), real)
        state, progress = advance(state, key, real, np.int32(1))
        return x0, jax.device_get(state), jax.device_get(progress)

    out = {}
    for name in registry.names():
        t0 = time.process_time()
        cfg = tiny_config(name)
        cfg.batch_real = 8
        if name not in convnet:
            cfg.model.name = "mlp"
            if "dsa_strategy" in cfg:
                cfg.dsa_strategy = "none"
        real = common.make_real_data(ds.x_train, ds.y_train, ds.num_classes, cfg.batch_real)
        if registry.get(name).needs_buffer:
            cfg.buffer_dir = tempfile.mkdtemp()
            cfg.max_start_epoch, cfg.expert_epochs, cfg.syn_steps = 1, 1, 2
            write_fake_buffer(cfg.buffer_dir, real, cfg, epochs=2, dataset="digits")
        algo = registry.build(cfg, real)
        init = jax.jit(algo.init)  # one program instead of many eager ones
        mesh = loop.step_mesh(cfg, ds.num_classes)
        x0, st1, p1 = one_step(algo, init, real, None)
        _, st4, p4 = one_step(algo, init, real, mesh)
        s1, s4 = algo.synthetic(st1), algo.synthetic(st4)
        out[name] = {"mesh": [int(mesh.shape[a]) for a in parallel.AXES], "model": cfg.model.name,
                     "x": diff(s1.x, s4.x), "y": diff(s1.y, s4.y), "lr": diff(s1.lr, s4.lr),
                     "state": diff(st1, st4), "loss": diff(p1.metrics["loss"], p4.metrics["loss"]),
                     "moved": diff(s1.x, x0), "healthy": bool(p1.healthy) and bool(p4.healthy),
                     "steps": [int(p1.steps), int(p4.steps)], "cpu_seconds": time.process_time() - t0}
    print("RESULT " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def every_algorithm():
    """``{algorithm: {mesh, model, x, y, lr, state, loss, moved, healthy, steps,
    cpu_seconds}}``: max |4 devices - 1 device| of each part after one step (``x``:
    decoded images ``[M, 8, 8, 1]``, ``y``: labels, ``state``: every leaf), how far the
    step moved the images, and the step's health and count on both."""
    return run_on_four_devices(EVERY_ALGORITHM, json.dumps(CONVNET))


def test_every_registered_algorithm_is_checked(every_algorithm):
    assert sorted(every_algorithm) == sorted(ALGORITHMS) and len(ALGORITHMS) >= 12


@pytest.mark.parametrize("name", ALGORITHMS)
def test_one_step_on_four_devices_equals_one_device(every_algorithm, name):
    r = every_algorithm[name]
    per_class = issubclass(registry.get(name).settings, common.ClassMatchingSettings)
    assert r["mesh"] == ([2, 1, 2] if per_class else [4, 1, 1]), r  # data, model, class
    assert r["model"].startswith("convnet") == (name in CONVNET), r
    assert r["healthy"] and r["steps"] == [1, 1], r
    assert r["moved"] > 0, r  # the step changed the synthetic images
    for part in ("x", "y", "lr", "state", "loss"):
        assert r[part] <= TOL, (part, r)
