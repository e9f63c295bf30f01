"""Annotations and what is sampled from them: labelled regions and their crops (regions),
splits and sampled voxels (sampling), the import of published annotations (published), and a
corrected segmentation as a painted annotation (corrected)."""
