"""Entry point for the ``meshctl`` console script and ``python -m meshctl``."""

from __future__ import annotations

from meshctl.cli import cli


def main() -> None:
    cli(prog_name="meshctl")


if __name__ == "__main__":
    main()
