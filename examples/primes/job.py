"""Demo payload: count the primes (and twin primes) in one slice of the integers.

Shepard hands the job its parameters as environment variables: ITEM (which slice) and SPAN
(how wide a slice is). The result goes to $ROOT_OUTPUT_NAME, which Shepard zips and collects.
"""

import itertools
import json
import math
import os
import time


def primes_in(lo: int, hi: int) -> list[int]:
    """Primes p with lo <= p < hi, by a segmented sieve."""
    lo = max(lo, 2)
    if hi <= lo:
        return []
    flags = bytearray([1]) * (hi - lo)
    for p in range(2, math.isqrt(hi - 1) + 1):
        start = max(p * p, (lo + p - 1) // p * p)
        flags[start - lo :: p] = bytes(len(range(start, hi, p)))
    return [lo + i for i, f in enumerate(flags) if f]


def main() -> None:
    item, span = int(os.environ["ITEM"]), int(os.environ.get("SPAN", "10000"))
    lo, hi = (item - 1) * span, item * span
    began = time.perf_counter()
    primes = primes_in(lo, hi + 2)
    inside = [p for p in primes if p < hi]
    twins = sum(1 for a, b in itertools.pairwise(primes) if b - a == 2 and a < hi)
    result = {
        "item": item,
        "from": lo,
        "to": hi,
        "primes": len(inside),
        "twin_pairs": twins,
        "largest": inside[-1] if inside else None,
        "job": os.environ["UUID"],
        "seconds": round(time.perf_counter() - began, 4),
    }
    out = os.path.join(os.environ["ROOT_OUTPUT_NAME"], f"primes-{item:05d}.json")
    with open(out, "w") as fh:
        json.dump(result, fh)
    print(f"slice {item}: {len(inside)} primes in [{lo}, {hi})")


if __name__ == "__main__":
    main()
