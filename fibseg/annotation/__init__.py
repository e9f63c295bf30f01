"""Annotations and what is sampled from them: labelled regions and their crops (regions),
splits and sampled voxels (sampling), and the import of published annotations (published)."""
