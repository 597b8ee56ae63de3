-- The company's data, as its flows use it (SQLite: the same tables as schema.postgres.sql, in
-- SQLite's types: dates and times as ISO text). Every record belongs
-- to an owner company (owner_company): flows keep each company's data,
-- channels and senders apart. Business settings (reminder ladder, days
-- before expiry, Slack channel, senders, campaign ids) are columns of
-- companies: an analyst changes a rule there, not in a flow.
-- Applied by `rill db apply`; every statement can run again.

CREATE TABLE IF NOT EXISTS companies (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  currency TEXT NOT NULL DEFAULT 'EUR',
  slack_channel TEXT,                        -- where the team hears of quotes, leads, payments
  sender_email TEXT,                         -- the From of mails to clients
  sender_name TEXT,
  sales_email TEXT,                          -- the sales team's address
  pm_email TEXT,                             -- who gets the project tasks
  quote_validity_days INTEGER NOT NULL DEFAULT 30,
  quote_warning_days INTEGER NOT NULL DEFAULT 3,   -- remind the client this many days before expiry
  deposit_percent NUMERIC(5,2) NOT NULL DEFAULT 30,
  reminder_ladder TEXT NOT NULL DEFAULT '3,10,30', -- days after the due date; the last step goes to the agency
  mautic_quote_sent_campaign INTEGER,
  mautic_signed_campaign INTEGER,
  mautic_nurture_segment INTEGER,
  mautic_quote_email INTEGER,                -- template mailed to the client when a quote is sent
  mautic_payment_points INTEGER NOT NULL DEFAULT 10,
  docuseal_template INTEGER,
  mautic_forms TEXT,                         -- ids of the Mautic forms whose submissions are its leads: '2,7'
  pm_task_days INTEGER NOT NULL DEFAULT 2,   -- a converted lead's kick-off task is due this many days later
  timezone TEXT NOT NULL DEFAULT 'Europe/Paris', -- its days (due dates, overdue days, the weekly report's week)
  -- Credentials: the NAMES of the environment variables holding this company's URL and secrets for
  -- each service (never a secret itself here); NULL: the default variable (INVOICENINJA_TOKEN...).
  invoiceninja_url_env TEXT,                 -- one Invoice Ninja account may hold several companies,
  invoiceninja_token_env TEXT,               -- each with its own API token
  docuseal_url_env TEXT,
  docuseal_token_env TEXT,
  mautic_url_env TEXT,
  mautic_user_env TEXT,
  mautic_password_env TEXT,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE IF NOT EXISTS contacts (
  id INTEGER PRIMARY KEY,
  owner_company BIGINT NOT NULL REFERENCES companies(id),
  first_name TEXT,
  last_name TEXT,
  email TEXT NOT NULL,
  phone TEXT,
  organization TEXT,
  mautic_id INTEGER,
  invoiceninja_client_id TEXT,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE IF NOT EXISTS leads (
  id INTEGER PRIMARY KEY,
  owner_company BIGINT NOT NULL REFERENCES companies(id),
  contact_id BIGINT REFERENCES contacts(id),
  source TEXT,                               -- website, referral, mautic, ...
  status TEXT NOT NULL DEFAULT 'new',        -- new, qualified, converted, lost
  score INTEGER NOT NULL DEFAULT 0,
  notes TEXT,
  converted_at TEXT,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE IF NOT EXISTS quotes (
  id INTEGER PRIMARY KEY,
  owner_company BIGINT NOT NULL REFERENCES companies(id),
  contact_id BIGINT NOT NULL REFERENCES contacts(id),
  lead_id BIGINT REFERENCES leads(id),
  number TEXT NOT NULL,
  title TEXT,
  amount NUMERIC(12,2) NOT NULL,
  currency TEXT NOT NULL DEFAULT 'EUR',
  status TEXT NOT NULL DEFAULT 'draft',      -- draft, sent, signed, expired, cancelled
  valid_until TEXT,
  sent_at TEXT,
  signed_at TEXT,
  expired_at TEXT,
  expiry_warned_at TEXT,              -- the client was reminded before expiry
  docuseal_submission_id TEXT,
  invoiceninja_invoice_id TEXT,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  UNIQUE (owner_company, number)
);

CREATE TABLE IF NOT EXISTS invoices (
  id INTEGER PRIMARY KEY,
  owner_company BIGINT NOT NULL REFERENCES companies(id),
  contact_id BIGINT NOT NULL REFERENCES contacts(id),
  quote_id BIGINT REFERENCES quotes(id),
  number TEXT NOT NULL,
  kind TEXT NOT NULL DEFAULT 'standard',     -- standard, deposit
  amount NUMERIC(12,2) NOT NULL,
  amount_paid NUMERIC(12,2) NOT NULL DEFAULT 0,
  currency TEXT NOT NULL DEFAULT 'EUR',
  status TEXT NOT NULL DEFAULT 'draft',      -- draft, sent, partially_paid, paid, collection, cancelled
  reference TEXT,                            -- the payment reference the client is asked to use
  issued_at TEXT,
  due_date TEXT,
  paid_at TEXT,
  invoiceninja_id TEXT,
  collection_status TEXT,                    -- the collection agency's last word
  collection_updated_at TEXT,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  UNIQUE (owner_company, number)
);

CREATE TABLE IF NOT EXISTS payments (
  id INTEGER PRIMARY KEY,
  owner_company BIGINT REFERENCES companies(id), -- unknown until matched
  invoice_id BIGINT REFERENCES invoices(id),
  source TEXT NOT NULL,                      -- revolut, invoiceninja, manual
  external_id TEXT NOT NULL,                 -- the service's id: a payment is recorded once
  amount NUMERIC(12,2) NOT NULL,
  currency TEXT NOT NULL,
  reference TEXT,
  payer TEXT,
  status TEXT NOT NULL,                      -- matched, partial, review (unmatched: a person decides)
  review_reason TEXT,
  recorded_by TEXT,                          -- the run that recorded it: a retry of that run goes on after it
  received_at TEXT NOT NULL,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  UNIQUE (source, external_id)
);

CREATE TABLE IF NOT EXISTS payment_reminders (
  id INTEGER PRIMARY KEY,
  invoice_id BIGINT NOT NULL REFERENCES invoices(id),
  step INTEGER NOT NULL,                     -- 1, 2, ... on the company's reminder ladder
  sent_at TEXT NOT NULL,
  UNIQUE (invoice_id, step)                  -- never twice for the same step
);

CREATE TABLE IF NOT EXISTS tasks (
  id INTEGER PRIMARY KEY,
  owner_company BIGINT NOT NULL REFERENCES companies(id),
  title TEXT NOT NULL,
  assignee_email TEXT,
  related_table TEXT,
  related_id BIGINT,
  due_date TEXT,
  status TEXT NOT NULL DEFAULT 'open',
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE IF NOT EXISTS audit_log (
  id INTEGER PRIMARY KEY,
  owner_company BIGINT REFERENCES companies(id),
  table_name TEXT NOT NULL,
  record_id BIGINT,
  action TEXT NOT NULL,
  details TEXT,                              -- JSON
  actor TEXT,                                -- the flow (and run) that wrote it
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE IF NOT EXISTS analytics_events (
  id INTEGER PRIMARY KEY,
  owner_company BIGINT REFERENCES companies(id),
  name TEXT NOT NULL,
  properties TEXT,                           -- JSON
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
