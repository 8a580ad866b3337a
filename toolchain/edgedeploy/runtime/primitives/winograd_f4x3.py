"""Winograd F(4x4, 3x3): 36 multiplies per 4x4 output tile instead of 144 (4x fewer).

Points 0, ±1, ±2 and infinity (Lavin & Gray 2016, section 4.2); in float32 the error stays around
1e-5..1e-4 of the output's magnitude for up to 512 input channels.
"""

from __future__ import annotations

from fractions import Fraction

from ._winograd import register_family

F4X3 = register_family("winograd_f4x3", 4, tuple(Fraction(p) for p in (0, 1, -1, 2, -2)))
