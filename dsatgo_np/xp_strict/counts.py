"""What the stand-in counts: reads back to the host, uploads, and operations that launch GPU work."""
from __future__ import annotations

import contextlib

_counts = {"to_host": 0, "to_device": 0, "ops": 0}


def _count(kind: str, n: int = 1):
    _counts[kind] += n


class Transfers:
    """Live counts since the `with count_transfers()` began: .count (device to host), .uploads."""

    def __init__(self):
        self._start = dict(_counts)

    @property
    def count(self) -> int:
        return _counts["to_host"] - self._start["to_host"]

    @property
    def uploads(self) -> int:
        return _counts["to_device"] - self._start["to_device"]

    @property
    def operations(self) -> int:
        """Operations that launch work on a GPU: every ufunc call or reduction, copy, fill,
        gather, scatter, matrix product, random draw and kernel; views, shapes and ``empty``
        are not counted. A CuPy function may launch more than one kernel (``std`` several):
        the count is a lower bound on a GPU's launches."""
        return _counts["ops"] - self._start["ops"]


@contextlib.contextmanager
def count_transfers():
    """``with count_transfers() as c: ...`` then ``c.count`` host transfers happened inside."""
    yield Transfers()
