"""medfactory: LLaMA-Factory recipes, corpus plugins and evaluation for medical LMs in pt-BR and es.

Installed layout: ``medfactory`` (core: CLI, recipe checks, demo, tiny models, file utilities),
``medfactory.plugins`` (the repository's ``plugins/`` folder: one module per corpus) and
``medfactory.eval`` (the repository's ``eval/`` folder: one module per evaluation).
"""

__version__ = "0.1.0"
