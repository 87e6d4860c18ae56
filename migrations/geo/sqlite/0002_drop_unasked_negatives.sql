-- Before this version, a database miss was stored as a negative
-- (source 'none') even when the online fallback was never asked, and that
-- row then stopped later lookups that allowed the fallback from asking it.
-- Such a row says nothing about the address: drop them all. Every row this
-- version writes has source 'http' (a fallback answer or a fallback
-- negative), and reads skip any other source.
DELETE FROM geo_cache WHERE source <> 'http';
