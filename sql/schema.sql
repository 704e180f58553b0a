-- Warehouse tables of SPEC §8. Every result row carries as_of_date and run_id; a run
-- replaces its date in one transaction. Amounts are USD unless stated.

-- grain: one row per account × instrument (netted across sources) per as_of_date
CREATE TABLE IF NOT EXISTS position_margin (
    as_of_date DATE NOT NULL,
    run_id VARCHAR NOT NULL,
    account_id VARCHAR NOT NULL,
    instrument_id VARCHAR NOT NULL,
    underlying VARCHAR,
    kind VARCHAR,
    net_qty DOUBLE,
    gross_qty DOUBLE,
    source_count BIGINT,
    price DOUBLE,
    mv_usd DOUBLE,
    delta_units DOUBLE,
    delta_usd DOUBLE,
    gamma_units DOUBLE,
    vega_usd DOUBLE,
    theta_usd DOUBLE,
    net_im DOUBLE,
    gross_im DOUBLE,
    worst_scenario_loss DOUBLE
);
-- a warehouse created before SPEC revision 2 gets the column (null on its older dates)
ALTER TABLE position_margin ADD COLUMN IF NOT EXISTS worst_scenario_loss DOUBLE;

-- grain: one row per account × underlying held (net-flat kept) per as_of_date
CREATE TABLE IF NOT EXISTS underlying_risk (
    as_of_date DATE NOT NULL,
    run_id VARCHAR NOT NULL,
    account_id VARCHAR NOT NULL,
    underlying VARCHAR NOT NULL,
    net_delta_units DOUBLE,
    delta_usd DOUBLE,
    gamma_units DOUBLE,
    vega_usd DOUBLE,
    theta_usd DOUBLE,
    scenario_losses DOUBLE[],
    scan_risk DOUBLE,
    worst_scenario INTEGER,
    calendar_charge DOUBLE,
    short_option_min DOUBLE,
    inter_credit DOUBLE,
    risk DOUBLE
);

-- grain: one row per account × collateral asset per as_of_date
CREATE TABLE IF NOT EXISTS collateral_valuation (
    as_of_date DATE NOT NULL,
    run_id VARCHAR NOT NULL,
    account_id VARCHAR NOT NULL,
    asset VARCHAR NOT NULL,
    amount DOUBLE,
    usd_rate DOUBLE,
    value_usd DOUBLE,
    haircut_usd DOUBLE,
    value_after_haircut_usd DOUBLE,
    eligible BOOLEAN
);

-- grain: one row per account per as_of_date
CREATE TABLE IF NOT EXISTS account_margin (
    as_of_date DATE NOT NULL,
    run_id VARCHAR NOT NULL,
    account_id VARCHAR NOT NULL,
    margin_group VARCHAR,
    margin_mode VARCHAR,
    lei VARCHAR,
    position_count BIGINT,
    gross_im DOUBLE,
    net_im DOUBLE,
    portfolio_im DOUBLE,
    inter_credit DOUBLE,
    im DOUBLE,
    mm DOUBLE,
    collateral_value_usd DOUBLE,
    haircut_usd DOUBLE,
    position_value_usd DOUBLE,
    equity DOUBLE,
    excess DOUBLE,
    margin_ratio DOUBLE,
    status VARCHAR,
    binding_status VARCHAR,
    netting_benefit DOUBLE,
    complete BOOLEAN
);

-- grain: one row per margin group per as_of_date
CREATE TABLE IF NOT EXISTS group_margin (
    as_of_date DATE NOT NULL,
    run_id VARCHAR NOT NULL,
    margin_group VARCHAR NOT NULL,
    member_count BIGINT,
    sum_member_im DOUBLE,
    group_im DOUBLE,
    aggregation_benefit DOUBLE,
    group_equity DOUBLE,
    group_excess DOUBLE,
    status VARCHAR
);

-- grain: one row per quarantined input row per as_of_date
CREATE TABLE IF NOT EXISTS quarantine (
    as_of_date DATE NOT NULL,
    run_id VARCHAR NOT NULL,
    source_table VARCHAR NOT NULL,
    row_json VARCHAR,
    reason VARCHAR NOT NULL
);

-- grain: one row per counterparty × stress where the stressed equity is below maintenance margin
-- (SPEC §11; ladder rungs are not written, stress_summary counts them). A counterparty is a
-- margin group (book_type 'group') or an account outside any group (book_type 'account').
CREATE TABLE IF NOT EXISTS stress_results (
    as_of_date DATE NOT NULL,
    run_id VARCHAR NOT NULL,
    book_type VARCHAR NOT NULL,
    book_id VARCHAR NOT NULL,
    stress_id VARCHAR NOT NULL,
    position_pnl_usd DOUBLE,
    collateral_change_usd DOUBLE,
    stressed_equity DOUBLE,
    shortfall_usd DOUBLE,
    mm DOUBLE
);

-- grain: one row per stress (ladder rungs included) per as_of_date, over all counterparties
CREATE TABLE IF NOT EXISTS stress_summary (
    as_of_date DATE NOT NULL,
    run_id VARCHAR NOT NULL,
    stress_id VARCHAR NOT NULL,
    ladder_move DOUBLE,              -- a ladder rung's uniform price move (e.g. -0.15); null for other stresses
    counterparties_below_mm BIGINT,
    counterparties_in_shortfall BIGINT,
    total_shortfall_usd DOUBLE,
    cover1_usd DOUBLE,
    cover2_usd DOUBLE,
    cover1_book_type VARCHAR,
    cover1_book_id VARCHAR,
    cover2_book_type VARCHAR,
    cover2_book_id VARCHAR
);

-- grain: one row per counterparty per as_of_date (when the stress table has ladder rungs)
CREATE TABLE IF NOT EXISTS liquidation_distance (
    as_of_date DATE NOT NULL,
    run_id VARCHAR NOT NULL,
    book_type VARCHAR NOT NULL,
    book_id VARCHAR NOT NULL,
    move_down DOUBLE,
    move_up DOUBLE
);

-- grain: one row per run attempt (never replaced; failed and interrupted attempts kept)
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    as_of_date DATE,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    status VARCHAR,              -- running | succeeded | failed | interrupted
    error VARCHAR,               -- one-line reason when status is failed
    code_version VARCHAR,
    parameters JSON,             -- inputs root, db, strict, policy values
    input_checksums JSON,        -- file → SHA-256
    row_counts JSON,             -- table → {read, used, quarantined}
    timings JSON,                -- stage → seconds
    warnings JSON                -- data-quality warnings: code → {count, sample}
);
