-- grain: one row per account on margin call, in liquidation or in deficit on the as_of_date ($1), largest binding deficit first (top 20)
SELECT account_id, margin_group, margin_mode, status, binding_status, binding_level, im_basis,
       im, mm, equity, deficit, binding_deficit, why
FROM v_margin_calls
WHERE as_of_date = $1
ORDER BY binding_deficit DESC, account_id
LIMIT 20;
