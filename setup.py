"""gold: data-efficient dataset distillation in JAX (critical samples selection)."""
from setuptools import find_packages, setup

setup(
    name="gold",
    version="0.1.0",
    description="Distill gold from massive ores: data-efficient dataset distillation in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["gold", "gold.*"]) + ["gold.configs"],
    # configs/ ships inside the package as gold.configs (importable from anywhere).
    package_dir={"gold.configs": "configs"},
    package_data={"gold": ["data/embedded/*"]},
    install_requires=[
        "jax>=0.4.30,<0.11",
        "flax>=0.10,<0.13",
        "optax>=0.2.3,<0.3",
        "numpy>=1.26,<3",
        "scipy>=1.11,<2",
        "ml-collections>=0.1.1,<2",
        "orbax-checkpoint>=0.6,<0.13",
        "absl-py>=2.0,<3",
        "pillow>=10,<13",
        "scikit-learn>=1.3,<2",
        "matplotlib>=3.7,<4",
        "tensorboardX>=2.6,<3",
        "tqdm>=4.60,<5",
    ],
    extras_require={
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "nbclient>=0.9,<1", "ipykernel>=6,<8", "nbformat>=5.9,<6"],
        "tfds": ["tensorflow-datasets>=4.9.4,<5"],
        # gold.data.stream: grain random access over array_record shards; PyAV decodes video
        "stream": ["grain>=0.2.10,<0.3", "array-record>=0.5,<1", "av>=12,<19"],
    },
)
