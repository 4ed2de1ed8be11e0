-- At most one active (queued or in-progress) run per machine, enforced by the database so two
-- concurrent provision requests cannot both insert one (issue 11). Runs left active twice by
-- older servers: all but the newest are failed first.
UPDATE runs SET status = 'failed', error = 'superseded by a newer run of the same machine'
WHERE status IN ('queued', 'in_progress') AND EXISTS (
    SELECT 1 FROM runs newer
    WHERE newer.machine_id = runs.machine_id
      AND newer.status IN ('queued', 'in_progress')
      AND (newer.created_at > runs.created_at
           OR (newer.created_at = runs.created_at AND newer.id > runs.id))
);
CREATE UNIQUE INDEX runs_one_active ON runs (machine_id) WHERE status IN ('queued', 'in_progress');
