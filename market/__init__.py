"""The synthetic market: a realistic book of accounts, positions, prices and collateral
for demos, tests and benchmarks, and the shipped methodology defaults (data/reference)."""
