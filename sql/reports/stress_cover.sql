-- grain: one row per stress on the as_of_date ($1): Cover 1 / Cover 2 and who makes them, named stresses first, then the ladder by move
SELECT stress_id, counterparties_below_mm, counterparties_in_shortfall, total_shortfall_usd,
       cover1_usd, cover1_counterparty, cover2_usd, cover2_counterparty
FROM v_stress_cover
WHERE as_of_date = $1
ORDER BY ladder_move IS NOT NULL, ladder_move, stress_id;
