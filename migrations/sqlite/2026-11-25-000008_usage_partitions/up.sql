-- PostgreSQL partitions usage_records by month here; SQLite keeps one table (kept in step).
SELECT 1;
