"""`python -m sweeps.bench`: kept where users call it; the tool lives in `sweeps.tools.bench.cli`."""
from sweeps.tools.bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
