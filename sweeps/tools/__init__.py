"""The command-line tools (`python -m sweeps.<tool>`): report, promote, jumps, bench."""
