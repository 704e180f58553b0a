-- grain: one row per as_of_date × collateral asset (SPEC §6)
-- value_usd counts positive balances only; borrowed_usd is the (negative) value of debts;
-- collateral_value_usd = Σ value_after_haircut_usd of every balance (debts count in full).
-- share_of_collateral = this asset's positive pre-haircut value / all assets' (0..1);
-- top_account_share = the largest single account's share of this asset's positive value.
CREATE OR REPLACE VIEW v_collateral_concentration AS
WITH by_asset AS (
    SELECT
        as_of_date,
        asset,
        count(*) FILTER (WHERE amount <> 0) AS accounts,
        sum(amount) AS amount,
        sum(value_usd) FILTER (WHERE value_usd > 0) AS value_usd,
        coalesce(sum(value_usd) FILTER (WHERE value_usd < 0), 0) AS borrowed_usd,
        sum(haircut_usd) AS haircut_usd,
        sum(value_after_haircut_usd) AS collateral_value_usd,
        bool_and(eligible) AS eligible,
        arg_max(account_id, value_usd) AS top_account_id,
        max(value_usd) AS top_account_value_usd
    FROM collateral_valuation
    GROUP BY as_of_date, asset
)
SELECT
    as_of_date,
    asset,
    accounts,
    amount,
    coalesce(value_usd, 0) AS value_usd,
    borrowed_usd,
    haircut_usd,
    collateral_value_usd,
    haircut_usd / nullif(value_usd, 0) AS effective_haircut,
    coalesce(value_usd, 0) / nullif(sum(coalesce(value_usd, 0)) OVER (PARTITION BY as_of_date), 0) AS share_of_collateral,
    eligible,
    top_account_id,
    greatest(top_account_value_usd, 0) / nullif(value_usd, 0) AS top_account_share
FROM by_asset;
