"""Utility, selection and class-split DM on data streamed from disk:
python launch/stream.py --config=configs/stream.py:imagenet64 --workdir=DIR --config.stream.dir=RECORDS

`--config.stream.dir` is a record set (gold.data.stream: convert the downsampled-ImageNet npz
batches or a prepared tfds imagenet_resized/64x64 once) for imagenet64, or a clip folder
`<dir>/train/<class>/<clip>.npy|.mp4` for kinetics400 (configs/stream.py:kinetics400).
Writes utility/ (the streamed loss indicator), distill/group_*/ and distill/synthetic.npz,
config.json and result.json into --workdir; rerunning the same command resumes.
"""

import _setup  # noqa: F401  (repo root on sys.path)

from gold import cli
from gold.experiments import streamed


def main(config, workdir: str) -> None:
    r = streamed.run(config, workdir)
    print(f"{r['dataset']} {r['algorithm']} ipc {r['ipc']}: {r['num_real']} of {r['num_samples']} samples kept, "
          f"{r['num_groups']} class groups, synthetic {r['synthetic_shape']}, seconds={r['seconds']:.1f}")


if __name__ == "__main__":
    cli.main(main, __doc__)
