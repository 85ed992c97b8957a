"""Password and PIN hashing (argon2id), the rules for new ones, and the scope table."""

from __future__ import annotations

import argon2
import pytest

from cloud.auth import passwords, scopes
from cloud.auth.passwords import WeakSecret
from cloud.auth.principal import ROLES, TENANT_ROLES, Principal
from tests.support.accounts import cheap_hashing


def test_the_production_profile_is_argon2id_rfc9106_and_verifies() -> None:
    stored = passwords.hash_secret("correct horse battery")
    params = argon2.extract_parameters(stored)
    assert stored.startswith("$argon2id$") and params.type is argon2.Type.ID
    assert (params.memory_cost, params.time_cost, params.parallelism) == (65536, 3, 4)
    assert passwords.verify(stored, "correct horse battery")
    assert not passwords.verify(stored, "correct horse batterY")
    assert not passwords.needs_rehash(stored)


def test_hashes_are_salted_and_weaker_ones_need_a_rehash(monkeypatch: pytest.MonkeyPatch) -> None:
    strong = passwords.hash_secret("480213")
    cheap_hashing(monkeypatch)
    first, second = passwords.hash_secret("480213"), passwords.hash_secret("480213")
    assert first != second and passwords.verify(first, "480213") and passwords.verify(second, "480213")
    assert passwords.verify(strong, "480213")  # the parameters travel with the hash
    assert passwords.needs_rehash(strong)  # made with other parameters than the hasher's
    monkeypatch.undo()
    assert passwords.needs_rehash(first) and not passwords.needs_rehash(strong)
    assert passwords.needs_rehash("not a hash")


def test_no_stored_hash_or_garbage_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashing(monkeypatch)
    assert passwords.verify(None, "anything") is False
    assert passwords.verify("$argon2id$garbage", "anything") is False


@pytest.mark.parametrize("pin", ["480213", "907315", "120934", "000001", "112358"])
def test_pins_that_are_accepted(pin: str) -> None:
    passwords.check_pin(pin)


@pytest.mark.parametrize(("pin", "rule"), [
    ("12345", "exactly 6 digits"), ("1234567", "exactly 6 digits"), ("12a456", "exactly 6 digits"),
    ("١٢٣٤٥٦", "exactly 6 digits"),  # Arabic-Indic digits are digits to str.isdigit, not to a keypad
    ("111111", "repeated or a run"), ("123456", "repeated or a run"), ("654321", "repeated or a run"),
    ("890123", "repeated or a run"), ("210987", "repeated or a run"),
    ("121212", "pair or triple"), ("123123", "pair or triple"), ("909090", "pair or triple"),
])
def test_trivial_pins_are_refused(pin: str, rule: str) -> None:
    with pytest.raises(WeakSecret, match=rule):
        passwords.check_pin(pin)


def test_password_rules_name_the_rule() -> None:
    passwords.check_password("correct horse battery", "amina")
    with pytest.raises(WeakSecret, match="10-256 characters, got 5"):
        passwords.check_password("short", "amina")
    with pytest.raises(WeakSecret, match="login"):
        passwords.check_password("Amina.Wanjiru", "amina.wanjiru")
    with pytest.raises(WeakSecret, match="repeated"):
        passwords.check_password("aaaaaaaaaaaa", "amina")


def test_every_role_maps_to_known_scopes_and_admins_hold_them_all() -> None:
    for role in ROLES:
        assert scopes.scopes_for([role]) <= set(scopes.SCOPES), role
    assert scopes.scopes_for(["tenant_admin"]) == set(scopes.SCOPES)
    assert "platform_admin" not in TENANT_ROLES and set(TENANT_ROLES) | {"platform_admin"} == set(ROLES)
    assert scopes.scopes_for(["farmer", "technician"]) == scopes.scopes_for(["farmer"]) | scopes.scopes_for(
        ["technician"])
    admin = scopes.admin_principal()
    assert admin.can("users:admin") and admin.tenant_id is None
    clerk = scopes.user_principal("u_1", "coop", ["clerk"], None, "10.0.0.1")
    assert clerk.can("users:unlock") and not clerk.can("users:admin") and not clerk.can("credit:decide")


def test_farmers_are_self_only_unless_they_hold_another_role() -> None:
    farmer = scopes.user_principal("u_1", "coop", ["farmer"], "f-1", None)
    assert scopes.self_only(farmer) and farmer.farmer_id == "f-1"
    assert not scopes.self_only(scopes.user_principal("u_2", "coop", ["farmer", "clerk"], "f-2", None))
    key = Principal(kind="api_key", id="k_1", tenant_id="coop", roles=frozenset(), scopes=frozenset({"credit:apply"}))
    assert not scopes.self_only(key) and key.can("credit:apply") and not key.can("credit:read")


def test_api_keys_cannot_be_given_account_scopes_or_unknown_ones() -> None:
    assert scopes.check_api_key_scopes(["series:read", "registry:read"]) == {"series:read", "registry:read"}
    with pytest.raises(ValueError, match="users:admin cannot be given to an API key"):
        scopes.check_api_key_scopes(["series:read", "users:admin"])
    with pytest.raises(ValueError, match="unknown farms:read"):
        scopes.check_api_key_scopes(["farms:read"])
    with pytest.raises(ValueError, match="at least one"):
        scopes.check_api_key_scopes([])
