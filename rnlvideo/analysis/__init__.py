"""Inspecting trained models: attention maps of RNL / NL blocks, single-video classification."""
