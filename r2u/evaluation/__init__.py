"""Scores: segmentation metrics (`metrics`), the operating point chosen on validation
(`operating_point`), per-image and pooled scoring (`scoring`) and the test-set
evaluation of a trained model (`evaluate`)."""
