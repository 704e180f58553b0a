"""Pure, vectorised Polars transforms implementing SPEC.md §3–§7.

Functions take and return Polars frames (mostly LazyFrames; a few steps collect:
``summation.ordered_sums`` sorts and adds in data order, ``encoding`` builds code
books, ``resolve`` collects the checked tables of a day or partition, and
``pipeline.margin_partition`` collects each shared intermediate once).  None
does I/O, touches Prefect or loops over rows, accounts or scenarios.  One module per
concept:

- ``validation``      — §3 row checks and quarantine with reason codes
- ``netting``         — §4 net per (book, instrument) across sources
- ``valuation``       — §4 Black-76 values, greeks, mark values
- ``rule_margin``     — §5.1 ``gross_im`` / ``net_im``
- ``portfolio_margin``— §5.2 scenario scan, calendar, short option min, credits
- ``collateral``      — §6 tiered haircuts and FX
- ``account_health``  — §5.3 / §6 equity, im, mm, excess, status
- ``groups``          — §7 margin groups margined as one book
- ``summation``       — §8 sums in an order fixed by the data (bit-identical results)
- ``contract``        — §2/§8 input schemas, result columns, keys, tables, reporting currency
- ``resolve``         — §2/§3 a raw day resolved: shared tables once, each partition's rows
- ``pipeline``        — wires the above into the output tables of §8 (``margin_partition``)
"""
