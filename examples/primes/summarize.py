"""Summarise the demo's results: read every primes-*.json retrieved from the flock."""

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main(folder: str) -> None:
    results = sorted(
        (json.loads(p.read_text()) for p in Path(folder).rglob("primes-*.json")),
        key=lambda r: r["item"],
    )
    if not results:
        sys.exit(f"no results under {folder}")
    table = Table(title=f"Primes below {results[-1]['to']:,}, from {len(results)} jobs")
    for col in ("slices", "range", "primes", "twin pairs", "largest prime"):
        table.add_column(col, justify="right")
    step = max(1, len(results) // 8)
    for i in range(0, len(results), step):
        chunk = results[i : i + step]
        table.add_row(
            f"{chunk[0]['item']}-{chunk[-1]['item']}",
            f"{chunk[0]['from']:,}-{chunk[-1]['to']:,}",
            f"{sum(r['primes'] for r in chunk):,}",
            f"{sum(r['twin_pairs'] for r in chunk):,}",
            f"{max((r['largest'] or 0) for r in chunk):,}",
        )
    total = sum(r["primes"] for r in results)
    twins = sum(r["twin_pairs"] for r in results)
    table.add_row("[bold]all", "", f"[bold]{total:,}", f"[bold]{twins:,}", "")
    Console().print(table)


if __name__ == "__main__":
    main(sys.argv[1])
