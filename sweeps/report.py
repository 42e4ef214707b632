"""`python -m sweeps.report`: kept where users call it; the tool lives in `sweeps.tools.report.cli`."""
from sweeps.tools.report.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
