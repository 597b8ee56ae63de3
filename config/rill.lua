-- rill's settings for `make run`. Every key can be overridden by an
-- environment variable RILL_<KEY> (RILL_LISTEN=0.0.0.0:8080 ...).
-- Secrets never go here: flows read them from the environment (env.NAME).
return {
  listen = "127.0.0.1:8080",
  flows_dir = "flows",
  log_level = "info",
  log_format = "auto",
  timezone = "Europe/Paris",
  max_body = "1MiB",
  deadline = "30s",
  env = {
    SLACK_CHANNEL = "#sales",
  },
}
