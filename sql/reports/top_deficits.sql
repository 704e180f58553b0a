-- grain: one row per account on margin call, in liquidation or in deficit on the as_of_date ($1), largest binding deficit first (top 20)
-- shortfall_to_im_usd = max(0, im − equity) of the account's own book (v_margin_calls.deficit under its clear name);
-- im_basis is left to the view (margin_mode says it, SPEC §5.3) so the table fits 1,400 px with a readable `why`
SELECT account_id, margin_group, margin_mode, status, binding_status, binding_level,
       im, mm, equity, shortfall_to_im_usd, binding_deficit, why
FROM v_margin_calls
WHERE as_of_date = $1
ORDER BY binding_deficit DESC, account_id
LIMIT 20;
