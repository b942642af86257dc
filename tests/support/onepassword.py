"""A policy and a 1Password account for tests that run jitpass against the Connect / Events stand-ins."""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.app import TEST_POLICY
from tests.support.fake_onepassword import CONNECT_TOKEN, EVENTS_TOKEN, FakeOnePassword

# A password and a TOTP seed that live only in the stand-in: they must appear nowhere but the private delivery.
OP_CANARY_PASSWORD = "op-canary-Pw-" + "9vK2mQ"
OP_CANARY_SEED = "OPCANARYSEED" + "MFRGGZDFMZTWQ2LK"
OP_OTPAUTH = f"otpauth://totp/Initech:admin?secret={OP_CANARY_SEED}&issuer=Initech"

OP_POLICY = TEST_POLICY + """
[vaults.initech]
description = "Initech (items in 1Password)"

[onepassword]
sync_every = "5m"

[onepassword.vaults."Initech"]
vault = "initech"
prefix = "initech-"

[onepassword.vaults."Acme (1Password)"]
vault = "acme"
prefix = "acme-op-"

[onepassword.people]
"requester@initech.example" = ["slack:UREQ", "teams:req-oid"]
"""


@dataclass
class OnePasswordAccount:
    fake: FakeOnePassword
    initech: str  # vault ids
    acme: str
    finance: str
    portal: str  # item id of "Portal admin" in Initech (password + OTP)


def seed_account(fake: FakeOnePassword) -> OnePasswordAccount:
    """Three vaults (two served, one not mapped) with realistic LOGIN items."""
    initech = fake.add_vault("Initech")
    acme = fake.add_vault("Acme (1Password)")
    finance = fake.add_vault("Finance")
    portal = fake.add_login(initech, "Portal admin", username="admin@initech.example", password=OP_CANARY_PASSWORD,
                            otp=OP_OTPAUTH, urls=("https://portal.initech.example", "https://backup.example"),
                            tags=("customer", "portal"))
    fake.add_login(acme, "Billing", username="billing@acme.example", password="acme-" + OP_CANARY_PASSWORD)
    fake.add_login(finance, "Bank", username="cfo", password="bank-" + OP_CANARY_PASSWORD)
    return OnePasswordAccount(fake, initech, acme, finance, portal)


def op_settings(fake: FakeOnePassword, *, events: bool = True) -> dict[str, object]:
    """Settings overrides pointing jitpass at the stand-ins."""
    values: dict[str, object] = {"op_connect_host": fake.connect_url, "op_connect_token": CONNECT_TOKEN}
    if events:
        values.update(op_events_url=fake.events_url, op_events_token=EVENTS_TOKEN)
    return values
