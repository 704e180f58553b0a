-- grain: one counterparty per row on the as_of_date ($1): the 20 nearest to liquidation on the ladder (already below mm first)
SELECT book_type, book_id, accounts, status, move_down AS move_down_pct, move_up AS move_up_pct,
       distance AS distance_pct, nearer_side, im, equity, excess
FROM v_liquidation_distance
WHERE as_of_date = $1 AND distance IS NOT NULL
ORDER BY distance, book_type, book_id
LIMIT 20;
