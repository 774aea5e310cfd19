"""Decoding and preprocessing of media: pure functions, no model needed."""
