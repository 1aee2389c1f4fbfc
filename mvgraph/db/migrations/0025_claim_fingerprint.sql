-- A worker's claim reads the catalog's fingerprint as of after the claim (issue 22 follow-up).
--
-- mvgraph.claim_jobs_start claims (mvgraph.claim_jobs, a volatile function: its statements see
-- what committed before they began) and returns mvgraph.catalog_fingerprint() with each job.
-- That function was STABLE, so it read the catalog as of the start of the claim's outer
-- statement: DDL committed between that start and the claim itself, followed by the submit of
-- the claimed job, was not in the fingerprint, and the worker planned the job with the graph it
-- had cached ("b is not in the graph" for a view created just before the job was submitted).
-- VOLATILE makes it read the catalog when it is called, after the claim.
ALTER FUNCTION mvgraph.catalog_fingerprint() VOLATILE;
