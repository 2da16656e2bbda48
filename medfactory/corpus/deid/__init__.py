"""De-identification of clinical notes in Portuguese (pt-BR) and Spanish: rules, a CRF tagger, surrogates.

The stage every notes plugin runs before a note is written (docs/deid.md): :mod:`.rules` finds
structured and keyword-anchored values, :mod:`.crf` tags names, places and the rest (tagging through
:mod:`.crf_viterbi`; :mod:`.encoder` is the transformers alternative for GPU VMs), :mod:`.deidentifier`
combines the layers and :mod:`.parallel` runs it over worker processes, :mod:`.spans` is the one span type
and category list, :mod:`.brat` reads and writes gold annotations and :mod:`.label_studio` the annotation
loop's tasks, :mod:`.evaluate` measures against gold, :mod:`.surrogates` replaces what was found.
"""
