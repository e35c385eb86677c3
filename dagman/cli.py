"""The ``dagman`` command: one subcommand per pipeline stage.

Each stage lives in its own module that exposes ``add_arguments(parser)`` and ``run(args)``; the module is
imported only when its subcommand runs, so ``dagman --help`` stays fast (no torch import).
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "COMMANDS"]

# subcommand -> (module holding add_arguments/run, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("dagman.io.synthetic.entrypoint", "write the synthetic demo cohort as real DICOM"),
    "convert": ("dagman.io.convert_entrypoint", "discover DICOM series in a folder tree and convert them to NIfTI"),
    "resample": ("dagman.io.cache_entrypoint", "resample converted series to isotropic spacing and build the training cache"),
}


def build_parser() -> argparse.ArgumentParser:
    from dagman import __version__

    parser = argparse.ArgumentParser(
        prog="dagman",
        description="DAGMaN pipeline stages. Each subcommand is one stage of the Snakemake workflow; "
        "run `dagman <stage> --help` for its options.",
    )
    parser.add_argument("--version", action="version", version=f"dagman {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<stage>")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # argument definitions are cheap to import only if the module keeps heavy imports inside run()
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    result = importlib.import_module(args._module).run(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
