"""The tenant split of the alias space: each tenant's part is found again from the alias
alone, two tenants (or two names) never share an alias, and the plain part holds no
tenant's alias."""
from __future__ import annotations

from hypothesis import given, strategies as st

from homeserver.room_aliases import localpart_for, part_of, slug_tenant, tenant_slug

tenants = st.text(alphabet="ABCXYZabcxyz0189._=-", min_size=1, max_size=64)
names = st.text(alphabet=st.characters(blacklist_characters=":\x00 #", blacklist_categories=("Cs",)),
                min_size=1, max_size=40)


def test_examples():
    assert localpart_for("acme", "lobby") == "acme.lobby"
    assert localpart_for("acme.eu", "lobby") == "acme=2eeu.lobby"
    assert localpart_for("a=b", "x.y") == "a=3db.x.y"
    assert part_of("acme.lobby") == "acme"
    assert part_of("acme=2eeu.lobby") == "acme.eu"
    assert part_of("lobby") is None
    assert part_of(".lobby") is None          # an empty slug is nobody's
    assert part_of("acme=2Eeu.lobby") is None  # only the canonical spelling is a slug
    assert part_of("a=zz.lobby") is None
    assert part_of("x" * 65 + ".lobby") is None  # longer than any tenant id


@given(tenants, names)
def test_an_alias_is_in_its_tenants_part(tenant, name):
    assert part_of(localpart_for(tenant, name)) == tenant


@given(tenants, names, tenants, names)
def test_placing_is_one_to_one(t1, n1, t2, n2):
    same = localpart_for(t1, n1) == localpart_for(t2, n2)
    assert same == ((t1, n1) == (t2, n2))


@given(tenants)
def test_slugs_round_trip_and_hold_no_separator(tenant):
    slug = tenant_slug(tenant)
    assert "." not in slug and slug_tenant(slug) == tenant


@given(names)
def test_a_name_outside_every_tenants_part_stays_plain(name):
    # What a user without a tenant may name: exactly the localparts no tenant owns.
    if part_of(name) is None:
        assert localpart_for(None, name) == name
    else:
        assert localpart_for(part_of(name), name.partition(".")[2]) == name
