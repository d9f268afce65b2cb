"""MiniHack level files (.des) of the minihack suite, read with importlib.resources (see tasks/minihack.py)."""
