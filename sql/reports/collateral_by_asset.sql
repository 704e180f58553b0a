-- grain: one row per collateral asset on the as_of_date ($1): concentration and haircuts
SELECT asset, accounts, value_usd, borrowed_usd, haircut_usd, collateral_value_usd, effective_haircut,
       share_of_collateral, eligible, top_account_id, top_account_share
FROM v_collateral_concentration
WHERE as_of_date = $1
ORDER BY value_usd DESC, asset;
