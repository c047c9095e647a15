"""Experiments as short, readable scripts built from reglab's components and its reference loop.

A recipe is meant to be read and copied; the library never depends on a recipe.
"""
