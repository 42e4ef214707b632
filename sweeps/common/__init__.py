"""What every room uses: the bad-input rule (one line, exit 2), locks, and secrets kept out of what is written."""
