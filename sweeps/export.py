"""`python -m sweeps.export`: kept where users call it; the tool lives in `sweeps.tools.export`."""
from sweeps.tools.export import main

if __name__ == "__main__":
    raise SystemExit(main())
