"""The ``edgetelemetry`` command."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgetelemetry", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run an instrumented multi-model inference loop")
    demo.add_argument("--seconds", type=float, default=5.0, help="how long to run (5)")

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "demo":
        from . import demo as demo_module

        if not 0 < args.seconds <= 3600:
            parser.error("--seconds must be in (0, 3600]")
        return demo_module.main(seconds=args.seconds)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
