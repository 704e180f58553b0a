-- grain: one row per account: its most recent account_margin row (the latest as_of_date on which it was published)
-- is_latest_date is false for an account that no longer appears in the newest published date
-- (v_account_today holds only the newest date's accounts).
-- shortfall_to_im_usd = max(0, −excess): USD the account's own book needs to restore initial margin.
CREATE OR REPLACE VIEW v_account_latest AS
SELECT
    a.*,
    greatest(-a.excess, 0) AS shortfall_to_im_usd,
    a.as_of_date = (SELECT max(as_of_date) FROM account_margin) AS is_latest_date
FROM account_margin AS a
QUALIFY row_number() OVER (PARTITION BY a.account_id ORDER BY a.as_of_date DESC) = 1;
