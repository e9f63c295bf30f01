"""fibseg: CNN segmentation of FIB-SEM volumes into pore (0) and solid (1).

Subpackages, lowest layer first (tests/test_layers.py keeps imports pointing downwards):
- runtime: typed settings, a job's log and threads, progress lines
- io: volumes in every format behind one entry point, voxel sizes, errors, atomic writers
- preprocess: registration, alignment and gradient correction (§3.1)
- networks: the architectures by name (registry): the U-Net and the patch CNN with its
  fully convolutional twin; window geometry
- annotation: labelled regions, splits and sampling, published annotations
- demo: synthetic volumes with known truth for the demo
- training: U-Net tiles, patch and dense training, unlabelled voxels, successive halving,
  selection
- baselines: the random forest
- inference: the U-Net's engine, the sliding window and the dense engine, ensembles,
  pretrained models and bundles
- evaluation: metrics, scores, post-processing, figures
- structure: pore-structure analysis
- pipeline: the sheet, input and config checks, and the DAG's helpers for the Snakemake rules;
  a project's config and checks, and one volume segmented with a bundle (`fibseg predict`)
- cli: the `fibseg` command
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fibseg")  # pyproject.toml's, as installed
except PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "unknown"
