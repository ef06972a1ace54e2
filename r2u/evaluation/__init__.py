"""Scores: binary segmentation metrics (`metrics`) and per-class ones (`classes`), the
operating point chosen on validation (`operating_point`), per-image and pooled scoring
(`scoring`), training's validation (`validation`), the inference mode chosen after
training (`selection`) and the test-set evaluation of a trained model (`evaluate`)."""
