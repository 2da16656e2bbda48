"""De-identification of clinical notes in Portuguese (pt-BR) and Spanish: rules, a CRF tagger, surrogates.

The stage every notes plugin runs before a note is written (docs/deid.md): :mod:`.rules` finds
structured and keyword-anchored values, :mod:`.crf` tags names, places and the rest, :mod:`.spans`
is the one span type and category list, :mod:`.brat` reads and writes gold annotations, :mod:`.evaluate`
measures against them, :mod:`.surrogates` replaces what was found.
"""
