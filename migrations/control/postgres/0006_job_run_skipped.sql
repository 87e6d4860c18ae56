-- A run that had nothing it could do (history_sync while fail2ban keeps no
-- database) is recorded as 'skipped', not as a failure.
ALTER TABLE job_runs DROP CONSTRAINT job_runs_status_check;
ALTER TABLE job_runs ADD CONSTRAINT job_runs_status_check
    CHECK (status IN ('running', 'ok', 'failed', 'cancelled', 'skipped'));
