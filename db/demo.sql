-- Demo data for both databases: two owner companies with their settings,
-- contacts, leads, quotes and invoices at every stage the flows handle.
-- {{date:N}} is today plus N days and {{time:N}} that instant (UTC), filled
-- in by `rill db apply`, so the demo is current whenever it is loaded.
-- Loading it twice changes nothing (ON CONFLICT DO NOTHING).

INSERT INTO companies (id, name, currency, slack_channel, sender_email, sender_name, sales_email, pm_email,
  quote_validity_days, quote_warning_days, deposit_percent, reminder_ladder, mautic_quote_sent_campaign,
  mautic_signed_campaign, mautic_nurture_segment, mautic_quote_email, mautic_payment_points, docuseal_template,
  mautic_forms, pm_task_days, timezone, invoiceninja_token_env, docuseal_url_env, docuseal_token_env,
  mautic_url_env, mautic_user_env, mautic_password_env)
VALUES
  -- company 1: the default variables (INVOICENINJA_URL, INVOICENINJA_TOKEN, DOCUSEAL_*, MAUTIC_*)
  (1, 'Atelier Lumen', 'EUR', '#lumen-sales', 'devis@lumen.example', 'Atelier Lumen', 'ventes@lumen.example',
   'projets@lumen.example', 30, 3, 30, '3,10,30', 11, 12, 21, 31, 10, 41, '2', 2, 'Europe/Paris',
   NULL, NULL, NULL, NULL, NULL, NULL),
  -- company 2: its own token in the same Invoice Ninja account, its own DocuSeal and Mautic
  (2, 'Nordwind Consulting', 'EUR', '#nordwind', 'quotes@nordwind.example', 'Nordwind', 'sales@nordwind.example',
   'pm@nordwind.example', 15, 2, 40, '5,15,45', 13, 14, 22, 32, 5, 42, '5', 3, 'Europe/Berlin',
   'NORDWIND_INVOICENINJA_TOKEN', 'NORDWIND_DOCUSEAL_URL', 'NORDWIND_DOCUSEAL_TOKEN',
   'NORDWIND_MAUTIC_URL', 'NORDWIND_MAUTIC_USER', 'NORDWIND_MAUTIC_PASSWORD')
ON CONFLICT DO NOTHING;

INSERT INTO contacts (id, owner_company, first_name, last_name, email, phone, organization) VALUES
  (1, 1, 'Claire', 'Martin', 'claire.martin@client.example', '+33 6 12 34 56 78', 'Boulangerie Martin'),
  (2, 1, 'Hugo', 'Bernard', 'hugo@bernard-archi.example', NULL, 'Bernard Architectes'),
  (3, 1, 'Inès', 'Petit', 'ines.petit@client.example', NULL, NULL),
  (4, 2, 'Jonas', 'Keller', 'j.keller@kunde.example', '+49 151 2345678', 'Keller GmbH'),
  (5, 2, 'Maja', 'Schulz', 'maja@schulz.example', NULL, 'Schulz & Partner')
ON CONFLICT DO NOTHING;

INSERT INTO leads (id, owner_company, contact_id, source, status, score, notes) VALUES
  (1, 1, 3, 'website', 'new', 0, 'Asked for a quote for a shop front'),
  (2, 2, 5, 'referral', 'qualified', 20, 'Referred by Keller GmbH')
ON CONFLICT DO NOTHING;

INSERT INTO quotes (id, owner_company, contact_id, lead_id, number, title, amount, currency, status, valid_until,
  sent_at) VALUES
  (1, 1, 1, NULL, 'D-2026-001', 'Shop front lighting', 4800.00, 'EUR', 'draft', '{{date:30}}', NULL),
  (2, 1, 2, NULL, 'D-2026-002', 'Office lighting study', 2350.00, 'EUR', 'sent', '{{date:2}}', '{{time:-28}}'),
  (3, 1, 1, NULL, 'D-2026-003', 'Terrace lights', 1200.00, 'EUR', 'sent', '{{date:-1}}', '{{time:-31}}'),
  (4, 2, 4, NULL, 'Q-2026-101', 'Process audit', 9600.00, 'EUR', 'sent', '{{date:10}}', '{{time:-5}}'),
  -- a big deal: signed, it is announced to the sales channel (flows/big-deal-alert.lua)
  (5, 1, 3, NULL, 'D-2026-004', 'Showroom lighting installation', 14800.00, 'EUR', 'sent', '{{date:20}}',
   '{{time:-12}}')
ON CONFLICT DO NOTHING;

INSERT INTO invoices (id, owner_company, contact_id, quote_id, number, kind, amount, amount_paid, currency, status,
  reference, issued_at, due_date) VALUES
  (1, 1, 1, NULL, 'F-2026-041', 'standard', 1500.00, 0, 'EUR', 'sent', 'F-2026-041', '{{date:-34}}', '{{date:-4}}'),
  (2, 1, 2, NULL, 'F-2026-042', 'standard', 820.00, 0, 'EUR', 'sent', 'F-2026-042', '{{date:-41}}', '{{date:-11}}'),
  (3, 1, 1, NULL, 'F-2026-043', 'standard', 640.00, 0, 'EUR', 'sent', 'F-2026-043', '{{date:-5}}', '{{date:25}}'),
  (4, 2, 4, NULL, 'R-2026-201', 'standard', 3200.00, 3200.00, 'EUR', 'paid', 'R-2026-201', '{{date:-40}}',
   '{{date:-10}}'),
  (5, 2, 5, NULL, 'R-2026-202', 'standard', 2750.00, 0, 'EUR', 'sent', 'R-2026-202', '{{date:-61}}', '{{date:-31}}')
ON CONFLICT DO NOTHING;
