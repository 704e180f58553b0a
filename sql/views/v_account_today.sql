-- grain: one row per account published on the latest as_of_date of account_margin
-- Every account_margin column of that date, plus shortfall_to_im_usd = max(0, −excess), the USD
-- the account's own book needs to restore initial margin (0 when excess ≥ 0; not the status 'deficit').
-- For another day: account_margin WHERE as_of_date = 'YYYY-MM-DD'.
CREATE OR REPLACE VIEW v_account_today AS
SELECT
    a.*,
    greatest(-a.excess, 0) AS shortfall_to_im_usd
FROM account_margin AS a
WHERE a.as_of_date = (SELECT max(as_of_date) FROM account_margin);
