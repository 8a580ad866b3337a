"""Winograd F(2x2, 3x3): 16 multiplies per 2x2 output tile instead of 36 (2.25x fewer).

Points 0, ±1 and infinity (Lavin & Gray 2016, section 4.1); exact enough for any channel count.
"""

from __future__ import annotations

from fractions import Fraction

from ._winograd import register_family

F2X3 = register_family("winograd_f2x3", 2, (Fraction(0), Fraction(1), Fraction(-1)))
