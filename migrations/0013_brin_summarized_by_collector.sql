-- With autosummarize, every filled block range queues an autovacuum work
-- item; autovacuum takes them about once a minute and holds 256, so past a
-- few thousand rows a second PostgreSQL logged "request for BRIN range
-- summarization ... was not recorded" (with the statement) for most new
-- ranges: 5,000 lines and 34 MB of log in one benchmark. The collector now
-- summarizes new ranges itself once a minute (brin_summarize_new_values),
-- next to the rollup fold; until then a new range simply counts as a match.
ALTER INDEX transactions_time_brin SET (autosummarize = off);
