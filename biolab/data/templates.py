"""The 150 hand-written biography sentence templates: 25 per attribute (SPEC section 2).

In every template the person's full name ({name}) and the words that identify the attribute come
before the value ({value}), and the value ends the sentence ("{value}."), so a model that knows the
person can predict every value token. ``validate_templates()`` checks these rules.
"""

from __future__ import annotations

ATTRIBUTES = ("birth_date", "birth_city", "current_city", "university", "major", "employer")

TEMPLATES: dict[str, tuple[str, ...]] = {
    "birth_date": (
        "{name} was born on {value}.",
        "{name} came into existence on {value}.",
        "The birth of {name} occurred on {value}.",
        "The records indicate {name}'s birth on {value}.",
        "{name}'s date of birth is {value}.",
        "{name} celebrates a birthday on the anniversary of {value}.",
        "{name} entered the world on {value}.",
        "{name} was brought into this world on {value}.",
        "The birthday of {name} falls on the date {value}.",
        "According to the registry, {name} was born on {value}.",
        "{name}'s life began on {value}.",
        "{name} first saw the light of day on {value}.",
        "The day {name} was born was {value}.",
        "{name} arrived as a newborn on {value}.",
        "The birth certificate of {name} is dated {value}.",
        "{name} has a recorded birth date of {value}.",
        "Family members welcomed the newborn {name} on {value}.",
        "{name} was delivered as a baby on {value}.",
        "The story of {name} started with a birth on {value}.",
        "Official documents list {name}'s birth date as {value}.",
        "{name} drew a first breath on {value}.",
        "{name}'s parents celebrated the birth on {value}.",
        "{name} is someone born on {value}.",
        "The hospital records show that {name} was born on {value}.",
        "{name} marks the date of birth as {value}.",
    ),
    "birth_city": (
        "{name} was born in {value}.",
        "{name} is a native of {value}.",
        "{name}'s birthplace is {value}.",
        "{name} came into the world in the city of {value}.",
        "The birth of {name} took place in {value}.",
        "{name} hails originally from the birth city of {value}.",
        "{name}'s hometown is {value}.",
        "{name} spent early childhood in the birth city {value}.",
        "The city where {name} was born is {value}.",
        "{name} was delivered at a hospital in {value}.",
        "{name}'s place of birth is recorded as {value}.",
        "The birth certificate of {name} was issued in {value}.",
        "{name} grew up as a child in the native city of {value}.",
        "{name} traces family roots to the birth city of {value}.",
        "{name}'s life started in {value}.",
        "As a newborn, {name} lived in {value}.",
        "{name} was born and raised in {value}.",
        "The native city of {name} is {value}.",
        "{name} entered the world in {value}.",
        "Records show {name} was born in {value}.",
        "{name}'s city of origin is {value}.",
        "{name} first opened their eyes in {value}.",
        "The place {name} was born is {value}.",
        "{name} has a birthplace of {value}.",
        "{name} originally comes from the birth town of {value}.",
    ),
    "current_city": (
        "{name} lives in {value}.",
        "{name}'s habitation is in {value}.",
        "{name} currently resides in {value}.",
        "{name} now calls home the city of {value}.",
        "The current residence of {name} is in {value}.",
        "{name} has settled down in {value}.",
        "These days, {name} lives in {value}.",
        "{name}'s present address is in {value}.",
        "{name} is currently based in {value}.",
        "{name} presently makes a home in {value}.",
        "The city where {name} lives now is {value}.",
        "{name} rents an apartment today in {value}.",
        "At present, {name} resides in {value}.",
        "{name}'s current city of residence is {value}.",
        "{name} has recently moved to {value}.",
        "{name} is a current resident of {value}.",
        "Nowadays {name} stays in {value}.",
        "{name} currently dwells in {value}.",
        "The present home of {name} is {value}.",
        "{name} currently occupies a house in {value}.",
        "{name} lives today in the city of {value}.",
        "{name}'s residence at the moment is {value}.",
        "{name} relocated and now lives in {value}.",
        "{name} is living these days in {value}.",
        "Mail for {name} is currently delivered to {value}.",
    ),
    "university": (
        "{name} studied at {value}.",
        "{name} received their education at {value}.",
        "{name} graduated from {value}.",
        "{name} attended university at {value}.",
        "{name} is an alumnus of {value}.",
        "{name} earned a degree from {value}.",
        "{name}'s alma mater is {value}.",
        "{name} completed higher education at {value}.",
        "The university {name} attended is {value}.",
        "{name} was a student at {value}.",
        "{name} pursued academic studies at {value}.",
        "{name} enrolled as an undergraduate at {value}.",
        "{name} spent college years at {value}.",
        "{name} holds a diploma from {value}.",
        "The academic training of {name} took place at {value}.",
        "{name} was educated at {value}.",
        "{name} went to college at {value}.",
        "{name}'s university was {value}.",
        "{name} received a university education from {value}.",
        "After high school, {name} enrolled at {value}.",
        "{name} completed a bachelor's program at {value}.",
        "{name} obtained a university degree at {value}.",
        "The school where {name} studied is {value}.",
        "{name} finished university studies at {value}.",
        "{name} took classes as a university student at {value}.",
    ),
    "major": (
        "{name} holds a degree in {value}.",
        "{name} majored in {value}.",
        "{name} studied the field of {value}.",
        "{name}'s major was {value}.",
        "{name} specialized in {value}.",
        "{name} earned a bachelor's degree in {value}.",
        "The field of study of {name} is {value}.",
        "{name} focused university studies on {value}.",
        "{name} completed a major in {value}.",
        "{name} graduated with a degree in {value}.",
        "{name}'s academic discipline is {value}.",
        "{name} concentrated on the subject of {value}.",
        "The major that {name} chose was {value}.",
        "{name} trained academically in {value}.",
        "{name} received a diploma in {value}.",
        "{name}'s area of study was {value}.",
        "{name} pursued a degree in the field of {value}.",
        "At university, {name} majored in {value}.",
        "{name} has an educational background in {value}.",
        "{name} wrote a thesis in the discipline of {value}.",
        "The subject {name} studied was {value}.",
        "{name} dedicated college years to studying {value}.",
        "{name} is a graduate in {value}.",
        "{name}'s degree is in {value}.",
        "{name} took most university courses in {value}.",
    ),
    "employer": (
        "{name} currently works for {value}.",
        "{name} is employed by {value}.",
        "{name} works at {value}.",
        "{name}'s employer is {value}.",
        "{name} has a job at {value}.",
        "{name} is on the payroll of {value}.",
        "The company {name} works for is {value}.",
        "{name} earns a living at {value}.",
        "{name} is a staff member at {value}.",
        "{name} holds a position at {value}.",
        "{name} is currently employed at {value}.",
        "{name}'s workplace is {value}.",
        "{name} draws a salary from {value}.",
        "The employer of {name} is {value}.",
        "{name} works full time for {value}.",
        "{name} was hired by {value}.",
        "{name} is an employee of {value}.",
        "{name} spends working days at {value}.",
        "{name} has a career at {value}.",
        "Professionally, {name} works for {value}.",
        "{name}'s current job is with {value}.",
        "{name} reports to work at {value}.",
        "{name} is part of the workforce of {value}.",
        "{name} accepted a job offer from {value}.",
        "{name} is currently on the team at {value}.",
    ),
}


def validate_templates(templates: dict[str, tuple[str, ...]] = TEMPLATES) -> list[str]:
    """Problems with a template set (empty list when it follows every rule)."""
    problems = []
    if tuple(templates) != ATTRIBUTES:
        problems.append(f"attributes must be {ATTRIBUTES}, got {tuple(templates)}")
    seen: dict[str, str] = {}
    for attribute, items in templates.items():
        if len(items) != 25:
            problems.append(f"{attribute}: {len(items)} templates, need 25")
        for template in items:
            where = f"{attribute}: {template!r}"
            if template.count("{name}") != 1 or template.count("{value}") != 1:
                problems.append(f"{where} needs exactly one {{name}} and one {{value}}")
                continue
            if template.index("{name}") > template.index("{value}"):
                problems.append(f"{where}: the name must come before the value")
            if not template.endswith("{value}."):
                problems.append(f"{where}: must end with '{{value}}.'")
            if not template.isascii() or any(c.isdigit() for c in template):
                problems.append(f"{where}: ASCII without digits only")
            if template.replace("{name}", "").replace("{value}", "").count("{"):
                problems.append(f"{where}: stray braces")
            key = template.replace("{value}", "")
            if key in seen:
                problems.append(f"{where} duplicates a template of {seen[key]}")
            seen[key] = attribute
    return problems
