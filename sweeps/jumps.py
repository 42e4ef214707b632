"""`python -m sweeps.jumps`: kept where users call it; the tool lives in `sweeps.tools.jumps`."""
from sweeps.tools.jumps import main

if __name__ == "__main__":
    raise SystemExit(main())
