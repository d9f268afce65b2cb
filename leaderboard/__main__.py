"""`python -m leaderboard leaderboard --suite S ...` and `python -m leaderboard publish RUN_DIR ...`."""

import sys

from leaderboard.cli import main

sys.exit(main())
