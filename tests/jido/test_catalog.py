"""The action catalog: register, list and search by name, category and tag."""

from __future__ import annotations

from typing import Any

import pytest

from jido import Action, ActionContext, Catalog, DefinitionError


class SendEmail(Action):
    """Send an email to a recipient."""

    category = "messaging"
    tags = ("email", "outbound")

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return None


class SendSms(Action):
    """Send a text message."""

    category = "messaging"
    tags = ("sms", "outbound")

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return None


class ReadInbox(Action):
    """Fetch new email from the inbox."""

    category = "messaging"
    tags = ("email", "inbound")

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return None


class Charge(Action):
    """Charge a card."""

    category = "billing"
    tags = ("money",)

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return None


@pytest.fixture
def catalog() -> Catalog:
    return Catalog([SendEmail, SendSms, ReadInbox, Charge])


def test_lookup_and_membership(catalog: Catalog) -> None:
    assert len(catalog) == 4
    assert catalog.get("send_email") is SendEmail
    assert catalog["charge"] is Charge
    assert catalog.get("nope") is None
    with pytest.raises(KeyError, match="known: charge"):
        catalog["nope"]
    assert "send_sms" in catalog and SendSms in catalog and "x" not in catalog
    assert list(catalog) == [SendEmail, SendSms, ReadInbox, Charge]
    assert catalog.names() == ["charge", "read_inbox", "send_email", "send_sms"]
    assert catalog.categories() == ["billing", "messaging"]
    assert catalog.tags() == ["email", "inbound", "money", "outbound", "sms"]


def test_list_by_category_and_tags(catalog: Catalog) -> None:
    assert catalog.list(category="billing") == [Charge]
    assert catalog.list(tag="email") == [ReadInbox, SendEmail]
    assert catalog.list(category="messaging", tags=["email", "outbound"]) == [SendEmail]
    assert catalog.list(category="nothing") == []
    assert len(catalog.list()) == 4


def test_search(catalog: Catalog) -> None:
    assert catalog.search("send") == [SendEmail, SendSms]
    # description matches rank after name matches
    assert catalog.search("email") == [SendEmail, ReadInbox]
    assert catalog.search("EMAIL recipient") == [SendEmail]
    assert catalog.search("inbox", tag="email") == [ReadInbox]
    assert catalog.search("card", category="messaging") == []
    assert catalog.search("") == catalog.list()


def test_register_rules(catalog: Catalog) -> None:
    catalog.register(Charge)  # same class again: fine
    other = type("Charge2", (Action,), {"name": "charge", "__doc__": "Other."})
    with pytest.raises(DefinitionError, match="already has an action named 'charge'"):
        catalog.register(other)
    with pytest.raises(DefinitionError):
        catalog.register(object)  # type: ignore[arg-type]
    catalog.unregister("charge")
    assert "charge" not in catalog
    catalog.register(other)
    assert catalog["charge"] is other


def test_to_tools(catalog: Catalog) -> None:
    tools = catalog.to_tools("anthropic")
    assert [t["name"] for t in tools] == catalog.names()
