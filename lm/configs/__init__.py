"""Reusable config pieces (model sizes, meshes, optimisers, stage defaults) that experiments compose."""
