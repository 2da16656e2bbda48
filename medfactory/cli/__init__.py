"""The ``medfactory`` command: every command is registered here; each lives in a thin module of ``medfactory.cli``.

The work is in the stage packages (``medfactory.corpus``, ``recipes``, ``run``, ``bench``) and in
``medfactory.plugins`` / ``medfactory.eval``; these modules only parse options and print.
"""

from __future__ import annotations

import errno
import signal
import sys

import typer

from medfactory.cli.audit import audit_app
from medfactory.cli.bench import bench_command
from medfactory.cli.contamination import contamination_command
from medfactory.cli.deid import deid_app
from medfactory.cli.demo import demo_command
from medfactory.cli.evaluate import eval_app
from medfactory.cli.generate import generate_app
from medfactory.cli.likert import likert_app
from medfactory.cli.prepare import prepare_app
from medfactory.cli.recipes import recipes_app
from medfactory.cli.run import card_command, merge_command
from medfactory.cli.tokens import tokens_command

app = typer.Typer(help="Recipes, corpus plugins and evaluation for medical LMs in pt-BR and es.", no_args_is_help=True)
app.add_typer(recipes_app, name="recipes")
app.add_typer(prepare_app, name="prepare")
app.add_typer(eval_app, name="eval")
app.add_typer(likert_app, name="likert")
app.add_typer(deid_app, name="deid")
app.add_typer(audit_app, name="audit")
app.add_typer(generate_app, name="generate")
app.command("contamination", help="Exact and near-duplicate overlap between two prepared sets (counts and ids only).")(contamination_command)
app.command("card", help="Provenance (recipe version and hashes, data manifests, versions, git) and a model card for saves/<run>; --push uploads.")(
    card_command
)
app.command("bench", help="Tokens/s, step time, peak memory, MFU and projected cost of a training recipe (tiny on CPU); --sweep for speed settings.")(
    bench_command
)
app.command("merge", help="TIES / DARE merge of models from a versioned recipe in recipes/merge/.")(merge_command)
app.command("tokens", help="Tokens of a recipe's prepared corpora versus tokens that reach its packed training blocks (fails below 99 %).")(tokens_command)
app.command("demo")(demo_command)


# Errors of a full or read-only disk: every output is written to a temporary file and renamed, so
# the message can promise that nothing prepared before was touched.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def exit_on_sigterm(signum: int, frame: object) -> None:
    # docker stop and VM preemption send SIGTERM: unwind as Ctrl-C does, so staging copies of
    # clinical text are removed by the context managers that made them.
    raise SystemExit(128 + signum)


def main() -> None:
    """The ``medfactory`` console script: the typer app, with SIGTERM unwound and disk-full errors as one message."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        app()
    except OSError as error:
        if error.errno not in DISK_ERRNOS:
            raise
        where = f" writing {error.filename}" if error.filename else ""
        typer.secho(
            f"error: {error.strerror or 'the disk is full'}{where}. Outputs are written to temporary files and renamed, so what existed "
            "before is unchanged. Fix: free space (or point --output-root / --output at a larger disk) and run again.",
            fg=typer.colors.RED,
            err=True,
        )
        sys.exit(1)
