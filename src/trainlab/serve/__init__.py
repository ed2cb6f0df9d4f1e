"""Serving trained models: the preprocessing shared with training (``preprocess``)."""
