"""Using a trained model: loading it from a checkpoint or SavedModel (`loading`), the
network on whole images and tiles (`network`), Gaussian-weighted sliding windows
(`sliding_window`), the SavedModel export (`export`) and segmenting image files
(`predict`)."""
