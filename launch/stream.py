"""Utility, selection, class-split DM and evaluation on data streamed from disk:
python launch/stream.py --config=configs/stream.py:imagenet64 --workdir=DIR --config.stream.dir=RECORDS

`--config.stream.dir` is a record set (gold.data.stream: convert the downsampled-ImageNet npz
batches or a prepared tfds imagenet_resized/64x64 once) for imagenet64, or a clip folder
`<dir>/train/<class>/<clip>.npy|.mp4` for kinetics400 (configs/stream.py:kinetics400); the
evaluation streams the held-out split from `<dir>/val` (`--config.stream.test_split`;
`--config.eval.num_models=0` skips it). Writes utility/ (the streamed loss indicator),
distill/group_*/ and distill/synthetic.npz, config.json and result.json (accuracy, seconds
per stage) into --workdir; rerunning the same command resumes.
"""

import _setup  # noqa: F401  (repo root on sys.path)

from gold import cli
from gold.experiments import streamed


def main(config, workdir: str) -> None:
    r = streamed.run(config, workdir)
    accuracy = (f"accuracy {r['accuracy_mean']:.2f} +- {r['accuracy_std']:.2f} on {r['num_test']} held-out samples"
                if "accuracy_mean" in r else r["evaluation"])
    print(f"{r['dataset']} {r['algorithm']} ipc {r['ipc']}: {r['num_real']} of {r['num_samples']} samples kept, "
          f"{r['num_groups']} class groups, synthetic {r['synthetic_shape']}, {accuracy}, seconds={r['seconds']:.1f}")


if __name__ == "__main__":
    cli.main(main, __doc__)
