"""run.py: starts every stand-in on loopback and prints the environment
variables that point rill's connectors at them, then serves until Ctrl-C:

    python3 tests/standins/run.py                # prints export lines, serves until Ctrl-C
    python3 tests/standins/run.py --print-only   # prints them and stops (to see the names)

Each stand-in records the requests it receives (see each module)."""
import atexit
import os
import shutil
import signal
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from standins import Directus, DocuSeal, InvoiceNinja, LpAgency, Mautic, Slack, Smtp, make_cert  # noqa: E402


def main():
    tmp = tempfile.mkdtemp(prefix="rill-standins-")
    atexit.register(shutil.rmtree, tmp, True)
    cert, key = make_cert(tmp)
    # the demo companies' channels (db/demo.sql) too, so that `make run` with these can post
    slack = Slack(channels=("C0SALES", "C0OPS", "#sales", "#lumen-sales", "#nordwind")).start()
    mautic, ninja, agency = Mautic().start(), InvoiceNinja().start(), LpAgency().start()
    docuseal, directus = DocuSeal().start(), Directus().start()
    smtp = Smtp(cert=cert, key=key).start()
    env = {
        "SLACK_WEBHOOK_URL": slack.webhook_url, "SLACK_API_URL": slack.api_url, "SLACK_BOT_TOKEN": slack.token,
        "SLACK_CHANNEL": "#sales",
        "MAUTIC_URL": mautic.url, "MAUTIC_USER": mautic.user, "MAUTIC_PASSWORD": mautic.password,
        "INVOICENINJA_URL": ninja.url, "INVOICENINJA_TOKEN": ninja.token,
        "DOCUSEAL_URL": docuseal.api_url, "DOCUSEAL_TOKEN": docuseal.token,
        "DIRECTUS_URL": directus.url, "DIRECTUS_TOKEN": directus.token,
        "SMTP_URL": smtp.url, "SMTP_USER": smtp.user, "SMTP_PASSWORD": smtp.password,
        "SMTP_CA_FILE": cert, "MAIL_FROM": "Rill <rill@example.com>",
        "LP_AGENCY_URL": agency.files_url, "LP_AGENCY_TOKEN": agency.token,
    }
    # the demo's company 2 names its own accounts' variables (db/demo.sql): here the same stand-ins
    env.update({
        "NORDWIND_INVOICENINJA_TOKEN": ninja.token,
        "NORDWIND_DOCUSEAL_URL": docuseal.api_url, "NORDWIND_DOCUSEAL_TOKEN": docuseal.token,
        "NORDWIND_MAUTIC_URL": mautic.url, "NORDWIND_MAUTIC_USER": mautic.user,
        "NORDWIND_MAUTIC_PASSWORD": mautic.password,
    })
    for k, v in env.items():
        print(f"export {k}='{v}'")
    sys.stdout.flush()
    if "--print-only" in sys.argv:
        return
    print("# serving; Ctrl-C stops", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
