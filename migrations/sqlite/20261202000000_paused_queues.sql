-- The consumers an operator paused (`POST /admin/queues/{queue}/pause` on a
-- worker's health port): one row per paused queue, named as the RabbitMQ
-- topology declares it. Every worker reads it at start and every few
-- seconds, so a paused queue stays paused across restarts and on every
-- worker sharing the database.
CREATE TABLE IF NOT EXISTS bus_paused_queues (
    queue     TEXT        PRIMARY KEY,
    paused_at TEXT        NOT NULL,
    paused_by TEXT
);
