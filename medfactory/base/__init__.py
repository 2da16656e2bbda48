"""The base layer: atomic writes, JSON Lines, the dataset registry, the manifest schema, versions, errors.

Every other part of medfactory builds on these; they import nothing of medfactory's but each other.
"""
