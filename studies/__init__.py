"""Studies of the method, apart from the product: the label budget (label_budget.py), the U-Net's
window of slices (z_window.py), where the errors are (unet_errors.py) and whether the CNN's and
the forest's errors are complementary (cnn_forest_mean.py). They share one way to prepare data
sets as the workflow does (common.py) and import only fibseg's public functions; their
write-ups and results lie beside them (label_budget.md) or in docs/."""
