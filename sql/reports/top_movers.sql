-- grain: one row per account on the as_of_date ($1) among the 15 largest absolute IM or equity changes since prev_date
SELECT account_id, prev_status, status, prev_im, im, im_change, im_price_effect, im_position_effect,
       prev_equity, equity, equity_change, equity_collateral_effect, equity_price_effect, equity_position_effect
FROM v_account_change
WHERE as_of_date = $1
ORDER BY greatest(abs(im_change), abs(equity_change)) DESC, account_id
LIMIT 15;
