"""`python -m sweeps.promote`: kept where users call it; the tool lives in `sweeps.tools.promote`."""
from sweeps.tools.promote import main

if __name__ == "__main__":
    raise SystemExit(main())
