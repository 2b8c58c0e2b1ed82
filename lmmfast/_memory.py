"""Refuse, with the estimate, what would not fit in memory, instead of being killed."""

from __future__ import annotations

from ._errors import MemoryLimitError

HEADROOM = 0.9  # of the available memory


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux); a large number where it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def check_allocation(nbytes: float, what: str, advice: str) -> None:
    """Raise MemoryLimitError if nbytes exceed the memory available now."""
    avail = available_bytes()
    if nbytes > HEADROOM * avail:
        raise MemoryLimitError(
            f"{what} needs about {_gib(nbytes)} of memory, more than the {_gib(avail)} "
            f"available. {advice}"
        )


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"
