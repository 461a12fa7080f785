"""The committed pools and the templates follow their rules, and the validators can fail."""

from biolab.data.make_pools import SIZES, clean_values, validate_pools
from biolab.data.pools import POOL_DIR
from biolab.data.templates import ATTRIBUTES, TEMPLATES, validate_templates


def test_committed_pools_have_spec_sizes_and_pass_validation():
    assert validate_pools() == []
    for name, size in SIZES.items():
        assert len((POOL_DIR / name).read_text().splitlines()) == size


def test_pool_validator_reports_duplicates_and_wrong_sizes(tmp_path):
    for name in SIZES:
        (tmp_path / name).write_text((POOL_DIR / name).read_text())
    majors = (tmp_path / "majors.txt").read_text().splitlines()
    (tmp_path / "majors.txt").write_text("\n".join(majors[:-1] + [majors[0].upper()]) + "\n")
    (tmp_path / "surnames.txt").write_text("Smith\nJones\n")
    problems = validate_pools(tmp_path)
    assert any("majors.txt: duplicates" in p for p in problems)
    assert any("surnames.txt: 2 values" in p for p in problems)


def test_cleaning_drops_token_prefixes_and_duplicates():
    assert clean_values(["Santiago", "Santiago de Cuba", "santiago", "Lima", "New  York", "Bad.Value"]) == \
        ["Santiago", "Lima", "New York"]


def test_templates_follow_the_rules():
    assert validate_templates() == []
    assert tuple(TEMPLATES) == ATTRIBUTES
    assert sum(len(t) for t in TEMPLATES.values()) == 150


def test_template_validator_can_fail():
    broken = dict(TEMPLATES)
    broken["major"] = TEMPLATES["major"][:24] + ("{value} is what {name} studied.",)
    broken["employer"] = TEMPLATES["employer"][:24]
    problems = validate_templates(broken)
    assert any("name must come before the value" in p for p in problems)
    assert any("employer: 24 templates" in p for p in problems)
