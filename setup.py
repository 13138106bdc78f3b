"""Packaging of sfg: dependencies and the console commands."""

import pathlib

from setuptools import find_packages, setup

README = pathlib.Path(__file__).resolve().parent / "README.md"
VERSION = "0.1.0"  # keep equal to sfg_app.__version__ (a test checks)

setup(
    name="sfg",
    version=VERSION,
    description=("Config-driven multi-task learning on medical images with Stochastic "
                 "Filter Groups, on TensorFlow 2 / Keras 3"),
    long_description=README.read_text(encoding="utf-8") if README.exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["sfg_app", "sfg_app.*"]),
    python_requires=">=3.11",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tensorboard>=2.21,<2.22",  # tf.summary needs it; TensorFlow 2.21 no longer pulls it in
        "keras>=3.10",
        "numpy>=1.26",
        "scipy>=1.11",
        "nibabel>=5.2",
        "SimpleITK>=2.3",
        "pyyaml>=6.0",
        "matplotlib>=3.8",
    ],
    extras_require={
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
        # The references of scripts/bench (MONAI's HighResNet and sliding window, on
        # PyTorch), never needed by sfg itself.
        "bench": ["torch>=2.3", "monai>=1.3"],
        "test": ["pytest>=8", "hypothesis>=6.100", "pytest-timeout>=2.3", "nilearn>=0.10",
                 "scikit-image>=0.22"],
    },
    entry_points={
        "console_scripts": [
            "sfg_train=sfg_app.cli.train:main",
            "sfg_infer=sfg_app.cli.infer:main",
            "sfg_eval=sfg_app.cli.evaluate:main",
            "sfg_groups=sfg_app.cli.groups:main",
            "sfg_export=sfg_app.cli.export:main",
            "sfg_plan=sfg_app.cli.plan:main",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
        "Topic :: Scientific/Engineering :: Image Processing",
    ],
)
