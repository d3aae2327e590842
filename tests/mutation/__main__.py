"""python -m tests.mutation [--only NAME ...] [--area AREA] [--list] [--report FILE] [--no-baseline]

Plants each mutant of tests/mutation/catalogue.py in a temporary copy of the tree, runs the tests named for it
there and reports which mutants survive. Exits 1 if a mutant survives without a `harmless` reason, or if a snippet
or a test file is not found (the catalogue needs updating after a refactor).
"""

import argparse
import sys
from pathlib import Path

from .catalogue import MUTANTS
from .runner import KILLED, SURVIVED, TIMEOUT, report_markdown, run, write_report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__.split("\n\n")[1])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="check only these mutants")
    parser.add_argument("--area", help="check only the mutants of this area (e.g. 'metrics')")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--report", type=Path, help="also write the report here (.md table or .json)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per test run (default 900)")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip running each test selection on the unmutated copy first"
    )
    args = parser.parse_args(argv)

    mutants = [
        mutant
        for mutant in MUTANTS
        if (not args.only or mutant.name in args.only) and (not args.area or mutant.area == args.area)
    ]
    unknown = sorted(set(args.only or ()) - {mutant.name for mutant in MUTANTS})
    if unknown:
        parser.error(f"unknown mutant(s) {', '.join(unknown)}; see --list")
    if args.list:
        for mutant in mutants:
            print(f"{mutant.name:45} {mutant.area:20} {mutant.kind:18} {mutant.file}")
        return 0

    outcomes = run(mutants, timeout=args.timeout, baseline=not args.no_baseline)
    print()
    print(report_markdown(outcomes, mutants))
    if args.report:
        write_report(args.report, outcomes, mutants)
    harmless = {mutant.name for mutant in mutants if mutant.harmless}
    unexplained = [o for o in outcomes if o.status == SURVIVED and o.name not in harmless]
    broken = [o for o in outcomes if o.status not in (KILLED, TIMEOUT, SURVIVED)]
    return 1 if unexplained or broken else 0


if __name__ == "__main__":
    sys.exit(main())
