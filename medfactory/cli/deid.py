"""``medfactory deid train|apply|eval``: the typer commands over :mod:`medfactory.corpus.deid`."""

from __future__ import annotations

import typer

deid_app = typer.Typer(help="De-identify clinical notes (pt, es): train the tagger, apply it, measure it against gold annotations.", no_args_is_help=True)

# --- deid train (owner: the CRF helper) ---------------------------------------------------------------

# --- deid apply (owner: the rules/surrogates helper) ----------------------------------------------------

# --- deid eval (owner: the BRAT/evaluation helper) -------------------------------------------------------
