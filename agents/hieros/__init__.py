"""Hieros (Mattes, Schlosser & Herbrich, ICML 2024): hierarchical imagination on S5 world models.

So far: the resettable S5 layer (`s5.py`) and the time-balanced replay sampler (`etbs.py`).
"""
