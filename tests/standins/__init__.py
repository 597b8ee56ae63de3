"""Stand-ins for the services rill's connectors call: small local servers,
written from the services' public API documentation and independent of
rill's code, that speak each protocol well enough for end-to-end tests
(routes, authentication, JSON shapes, validation errors) and record every
request they receive. See base.py for the common shape, run.py to start
them all by hand."""
from .base import HttpStandin, Recorded
from .directus import Directus
from .docuseal import DocuSeal
from .invoiceninja import InvoiceNinja
from .lpagency import LpAgency
from .mautic import Mautic
from .slack import Slack
from .smtp import Smtp, make_cert

__all__ = ["HttpStandin", "Recorded", "Slack", "Mautic", "InvoiceNinja", "DocuSeal", "Directus", "Smtp",
           "LpAgency", "make_cert"]
