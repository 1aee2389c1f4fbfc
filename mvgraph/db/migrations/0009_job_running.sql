-- Running jobs by themselves. Every claim counts the running worker jobs (the cap) and the
-- reaper looks for running jobs without a live owner; through job_queue, which also holds every
-- queued job, both scans grew with the backlog (0.2 ms each with 1,000 queued jobs).
CREATE INDEX job_running ON mvgraph.job (id) WHERE status = 'running';
