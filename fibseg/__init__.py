"""fibseg: CNN segmentation of FIB-SEM volumes into pore (0) and solid (1).

Subpackages, lowest layer first (tests/test_layers.py keeps imports pointing downwards):
- runtime: typed settings, a job's log and threads, progress lines
- io: volumes in every format behind one entry point, voxel sizes, errors, atomic writers
- preprocess: registration, alignment and gradient correction (§3.1)
- networks: the patch CNN, its fully convolutional twin, window geometry
- annotation: labelled regions, splits and sampling, published annotations
- demo: synthetic volumes with known truth for the demo
- training: patch and dense training, unlabelled voxels, successive halving, selection
- baselines: the random forest
- inference: the sliding window and the dense engine, ensembles, pretrained models
- evaluation: metrics, scores, post-processing, figures
- structure: pore-structure analysis
- pipeline: the sheet, input and config checks, and the DAG's helpers for the Snakemake rules;
  a project's config and checks, and one volume segmented with a bundle (`fibseg predict`)
- cli: the `fibseg` command
"""

__version__ = "0.1.0"
