-- Answers the local databases could not give: fallback answers and
-- negatives (country_code NULL). Times are Unix seconds.
CREATE TABLE geo_cache (
    ip              TEXT    PRIMARY KEY,
    country_code    TEXT,
    country_name    TEXT,
    continent_code  TEXT,
    asn             BIGINT,
    as_org          TEXT,
    source          TEXT    NOT NULL,
    resolved_at     BIGINT  NOT NULL,
    last_seen       BIGINT  NOT NULL,
    CHECK (length(ip) BETWEEN 2 AND 45),
    CHECK (country_code IS NULL OR length(country_code) = 2)
);

CREATE INDEX geo_cache_last_seen ON geo_cache (last_seen);
CREATE INDEX geo_cache_negatives ON geo_cache (resolved_at) WHERE country_code IS NULL;
