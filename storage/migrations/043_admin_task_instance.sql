-- Several processes (docs/scaling.md): the instance running each admin task, so a process
-- starting up fails only the tasks it was running itself. Tasks stored before this were
-- run by the single process, `main`.
ALTER TABLE admin_tasks ADD COLUMN IF NOT EXISTS instance TEXT NOT NULL DEFAULT 'main';
CREATE INDEX IF NOT EXISTS admin_tasks_unfinished ON admin_tasks (instance) WHERE status IN ('scheduled', 'active');
