-- The relay's role (postgres.url's user) reads the outbox (checks, poll mode) and, in poll mode,
-- deletes the rows it published.
GRANT SELECT, DELETE ON outbox TO ${relay_role};
