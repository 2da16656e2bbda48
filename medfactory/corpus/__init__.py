"""The corpus layer: read a source, normalise, scan identifiers, de-duplicate, split, write, check overlap.

Plugins (``medfactory.plugins``) call into it; it never imports a plugin or an evaluation.
"""
