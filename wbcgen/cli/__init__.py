"""The ``wbcgen`` command line: a thin click layer over the Python API.

Each command group lives in its own module and registers itself on :data:`main`.
"""
from __future__ import annotations

import click

from wbcgen import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="wbcgen")
def main() -> None:
    """wbcgen: synthetic white-blood-cell images.

    \b
    Train one GAN per cell class, sample synthetic cells, prove with the bundled
    classifier suite whether they are useful, and share it all on the Hub.

    \b
    Quick start (runs on the embedded PBC sample):
      wbcgen train-gan --cls all
      wbcgen sample -n 1000
      wbcgen evaluate --train-on synthetic
    """


from wbcgen.cli import data_cmds, gan_cmds, classifier_cmds, evaluate_cmds, hub_cmds, demo_cmds  # noqa: E402

for _m in (data_cmds, gan_cmds, classifier_cmds, evaluate_cmds, hub_cmds, demo_cmds):
    _m.register(main)
