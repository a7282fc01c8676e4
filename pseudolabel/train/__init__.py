"""The DeepLabV2 second stage: training on pseudo-labels (``trainer``) and prediction (``predict``)."""
