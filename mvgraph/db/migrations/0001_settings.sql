-- mvgraph's own settings, one row per key (lock mode, retention, job cap, ...).
CREATE TABLE mvgraph.setting (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE mvgraph.setting IS 'mvgraph settings shared by every process using this database';
