-- The demographics statement (0003) joins its materialized CTEs to each other, and
-- PostgreSQL estimates a CTE scan at one or two rows whatever it holds. On a table whose
-- statistics put few events per user, it then joins a batch's users to their events with
-- nested loops: quadratic in the batch. Measured on the embedded PostgreSQL 16 with
-- 360,000 stored events: a 5,000-event insert spent 6.7 s in this trigger (23.8 million
-- join-filter rows), 0.05 s once nested loops were off. The per-user lookup stays a
-- nested loop: a LATERAL join has no other plan.
ALTER FUNCTION adfunnel_apply_demographics() SET enable_nestloop = off;
