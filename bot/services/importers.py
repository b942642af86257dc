"""Import files -> item inputs: 1Password CSV exports and jitpass JSON. No store access here.

Every row is checked before anything is imported, and problems are reported with the row's
place in the file (CSV: the line the row starts on, header = line 1; JSON: item number from 1).
Messages name rows, titles and fields, never a password or a TOTP seed.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tomllib
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bot.domain.errors import ImportFileError, InputError
from bot.domain.model import Item, Secret
from bot.domain.totp import parse_totp

__all__ = [
    "MAX_NAME_LENGTH",
    "NAME_PATTERN",
    "ImportResult",
    "ItemInput",
    "VaultRules",
    "is_valid_name",
    "read_import",
    "slugify",
]

MAX_NAME_LENGTH = 64
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_NAME_RULE = "1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
_TRUE_WORDS = frozenset({"true", "yes", "1", "y"})

# 1Password 8 header names (lower-cased) and the few spellings other exports use for them.
_CSV_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "title": ("title",),
    "url": ("url", "website"),
    "username": ("username",),
    "password": ("password",),
    "otpauth": ("otpauth", "one-time password", "totp"),
    "archived": ("archived",),
    "tags": ("tags",),
    "notes": ("notes", "notesplain"),
    "vault": ("vault",),
}
_JSON_FIELDS = frozenset({"name", "title", "vault", "username", "url", "password", "totp", "notes", "tags"})


@dataclass(frozen=True)
class ItemInput:
    """One item read from an import file, validated and ready to be sealed."""

    name: str
    vault: str
    username: str = ""
    url: str = ""
    notes: str = ""
    tags: tuple[str, ...] = ()
    password: Secret | None = None
    totp: Secret | None = None  # already normalised by `parse_totp`
    source_row: int = 0
    source_label: str = ""  # where it is in its file, for messages: "line 4 ('Acme Zendesk')"

    def to_item(self) -> Item:
        """The catalogue metadata for this input (flags follow which secrets are present)."""
        return Item(
            name=self.name,
            vault=self.vault,
            username=self.username,
            url=self.url,
            notes=self.notes,
            tags=self.tags,
            has_password=self.password is not None,
            has_totp=self.totp is not None,
        )


@dataclass(frozen=True)
class VaultRules:
    """How a row's jitpass vault is chosen, first match wins (README "Importing items"):

    1. `by_vault`: the row's 1Password vault name (the Vault column) -> jitpass vault (`--vault-map`, `[vaults]`);
    2. `by_tag`: the row's tags -> jitpass vault (`--vault-map`, `[tags]`); several different targets: an error;
    3. `tag_vaults`: a tag that *is* the name of one of these vaults (`--vault-from-tag`: the policy's vaults);
       several: an error;
    4. the row's own vault (Vault column or JSON "vault", slugified for CSV);
    5. `default`; None (a mapping was asked for and no --vault given): the row is an error naming it.
    """

    default: str | None = "default"
    by_vault: Mapping[str, str] = field(default_factory=dict)
    by_tag: Mapping[str, str] = field(default_factory=dict)
    tag_vaults: frozenset[str] | None = None

    @property
    def maps(self) -> bool:
        """Whether any mapping (table or tags) was asked for."""
        return bool(self.by_vault or self.by_tag) or self.tag_vaults is not None


def read_vault_map(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Read a `--vault-map` TOML file: `[vaults]` 1Password vault name -> vault, `[tags]` tag -> vault."""
    text = _read_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"vault map {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"vaults", "tags"})
    if unknown:
        raise InputError(f"vault map {path}: unknown table(s) {', '.join(unknown)}; use [vaults] and [tags]",
                         hint='[vaults]\n"Acme Corp" = "acme"\n[tags]\nglobex = "globex"')
    tables: list[dict[str, str]] = []
    for table in ("vaults", "tags"):
        entries = data.get(table, {})
        if not isinstance(entries, dict):
            raise InputError(f"vault map {path}: [{table}] must be a table of \"name\" = \"vault\" lines")
        mapped: dict[str, str] = {}
        for key, target in entries.items():
            if not isinstance(target, str) or not is_valid_name(target):
                raise InputError(f"vault map {path}: [{table}] {key!r} must name a jitpass vault ({_NAME_RULE})")
            mapped[key.strip().lower()] = target
        tables.append(mapped)
    if not tables[0] and not tables[1]:
        raise InputError(f"vault map {path} maps nothing: give a [vaults] or a [tags] table")
    return tables[0], tables[1]


@dataclass(frozen=True)
class ImportResult:
    """Items to import, and a line per row left out (archived, or bad under --skip-bad)."""

    items: list[ItemInput] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class _BadRow(Exception):
    """A row problem; the message is safe to show (no secrets)."""


def slugify(title: str) -> str:
    """An item name made from a title: "Acme Zendesk (admin)" -> "acme-zendesk-admin"."""
    # Fold accents to ASCII ("Café" -> "cafe"); characters with no ASCII form are dropped.
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii").lower()
    # A lone "." or "_" is part of the name ("github.com"); any other run of punctuation is a gap.
    slug = re.sub(r"[^a-z0-9]+", lambda m: m.group() if m.group() in (".", "_") else "-", ascii_title)
    slug = slug.strip("-._")
    return slug[:MAX_NAME_LENGTH].rstrip("-._")


def is_valid_name(name: str) -> bool:
    """Whether `name` is usable as an item or vault name."""
    return NAME_PATTERN.fullmatch(name) is not None


def read_import(path: Path, *, default_vault: str | None = "default", skip_bad: bool,
                rules: VaultRules | None = None) -> ImportResult:
    """Read a 1Password CSV export (.csv) or jitpass JSON (.json) file; other names are sniffed."""
    rules = rules or VaultRules(default=default_vault)
    if rules.default is not None and not is_valid_name(rules.default):
        raise InputError(f"the default vault {rules.default!r} is not a valid vault name: use {_NAME_RULE}")
    text = _read_text(path)
    suffix = path.suffix.lower()
    if suffix == ".json" or (suffix != ".csv" and text.lstrip()[:1] in ("{", "[")):
        rows = _json_rows(path, text)
        kind = "item"
    else:
        rows = _csv_rows(path, text, sniffed=suffix != ".csv")
        kind = "line"
    return _collect(rows, kind=kind, rules=rules, skip_bad=skip_bad)


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"import file {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not an import file") from None
    except OSError as exc:
        raise InputError(f"cannot read import file {path}: {exc.strerror}") from None
    try:
        # utf-8-sig: spreadsheet tools often put a byte-order mark in front of CSV files.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path} is not UTF-8 text (invalid byte at offset {exc.start}); export it again as UTF-8"
        ) from None
    if "\x00" in text:
        raise InputError(f"{path} is a binary file, not a CSV or JSON export")
    if not text.strip():
        raise InputError(f"import file {path} is empty")
    return text


# -- rows ---------------------------------------------------------------------------------------


@dataclass
class _Row:
    """One raw row: its place in the file, its title for messages, its fields by our names."""

    number: int
    title: str
    fields: dict[str, Any]
    error: str = ""  # a problem found while reading the row itself
    archived: bool = False
    slug_vault: bool = False  # 1Password vault names are titles: slugify them


def _csv_rows(path: Path, text: str, *, sniffed: bool) -> list[_Row]:
    # newline="": quoted notes keep their line breaks and line_num counts physical lines.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[_Row] = []
    columns: dict[str, int] | None = None
    width = 0
    previous_line = 0
    try:
        for cells in reader:
            start_line, previous_line = previous_line + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if columns is None:
                columns, width = _csv_header(path, cells, sniffed=sniffed), len(cells)
                continue
            rows.append(_csv_row(start_line, cells, columns, width))
    except csv.Error as exc:
        raise InputError(
            f"{path} cannot be read as CSV: {exc} in the row starting on line {previous_line + 1} "
            "(is a quote left open?)"
        ) from None
    if columns is None:
        raise InputError(f"{path} has no header row")
    return rows


def _csv_header(path: Path, cells: list[str], *, sniffed: bool) -> dict[str, int]:
    names = [cell.strip().lower() for cell in cells]
    columns: dict[str, int] = {}
    for column, spellings in _CSV_COLUMNS.items():
        for index, name in enumerate(names):
            if name in spellings:
                columns[column] = index
                break
    if "title" not in columns:
        # Never echo the row: without a header it may be data, passwords included.
        expected = "a 1Password CSV export or a jitpass JSON file" if sniffed else "a 1Password CSV export"
        raise InputError(
            f"{path} is not {expected}: the first row must be a header with a Title column",
            hint="Title,Url,Username,Password,OTPAuth,Favorite,Archived,Tags,Notes",
        )
    return columns


def _csv_row(line: int, cells: list[str], columns: dict[str, int], width: int) -> _Row:
    fields: dict[str, Any] = {
        column: cells[index] if index < len(cells) else "" for column, index in columns.items()
    }
    error = ""
    if len(cells) > width and any(cell.strip() for cell in cells[width:]):
        # Columns have shifted: a password could land in the notes. Refuse the row instead.
        error = (
            f"the row has {len(cells)} fields but the header has {width}; "
            "a value with a comma is probably not quoted"
        )
    fields["totp"] = fields.pop("otpauth", "")
    archived = fields.pop("archived", "").strip().lower() in _TRUE_WORDS
    title = fields.pop("title").strip()
    return _Row(line, title, fields, error=error, archived=archived, slug_vault=True)


def _json_rows(path: Path, text: str) -> list[_Row]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    entries = document.get("items") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise InputError(
            f'{path} is not a jitpass import file: expected {{"items": [...]}}',
            hint='{"items": [{"name": "acme-zendesk", "vault": "acme", "password": "..."}]}',
        )
    rows: list[_Row] = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            rows.append(_Row(number, "", {}, error="each item must be a JSON object"))
            continue
        fields = {key: value for key, value in entry.items() if key in _JSON_FIELDS}
        title = fields.pop("title", None)
        label = title if isinstance(title, str) else fields.get("name")
        row = _Row(number, label.strip() if isinstance(label, str) else "", fields)
        if title is not None and not isinstance(title, str):
            row.error = f"'title' must be a string, not {_json_type(title)}"
        # A misspelt key ("passwrod") would silently drop a secret: refuse it instead.
        unknown = sorted(str(key) for key in entry if key not in _JSON_FIELDS)
        if unknown:
            row.error = (
                f"unknown field(s) {', '.join(repr(key) for key in unknown)}; "
                f"known fields are {', '.join(sorted(_JSON_FIELDS))}"
            )
        rows.append(row)
    return rows


# -- validation -----------------------------------------------------------------------------------


def _collect(rows: list[_Row], *, kind: str, rules: VaultRules, skip_bad: bool) -> ImportResult:
    items: list[ItemInput] = []
    skipped: list[str] = []
    problems: list[str] = []
    first_use: dict[str, str] = {}
    for row in rows:
        label = f"{kind} {row.number}" + (f" ({row.title!r})" if row.title else "")
        if row.archived:
            skipped.append(f"{label}: archived in 1Password; not imported")
            continue
        try:
            item = _item_input(row, rules)
            if item.name in first_use:
                raise _BadRow(f"duplicate: the name {item.name!r} is already used by {first_use[item.name]} "
                              "of this file")
        except _BadRow as exc:
            problem = f"{label}: {exc}"
            problems.append(problem)
            skipped.append(problem)
            continue
        first_use[item.name] = f"{kind} {row.number}"
        items.append(replace(item, source_label=label))
    if problems and not skip_bad:
        rows_word = "row" if len(problems) == 1 else "rows"
        raise ImportFileError(
            f"import rejected: {len(problems)} bad {rows_word}; nothing was imported "
            "(use --skip-bad to import the rest)",
            problems,
        )
    return ImportResult(items=items, skipped=skipped)


def _item_input(row: _Row, rules: VaultRules) -> ItemInput:
    if row.error and not row.fields:
        raise _BadRow(row.error)
    fields = row.fields
    errors: list[str] = [row.error] if row.error else []
    values = {key: _text_field(fields, key, errors) for key in ("name", "username", "url", "notes", "vault")}
    password = _text_field(fields, "password", errors)
    totp_text = _text_field(fields, "totp", errors)
    tags = _tags(fields.get("tags"), errors)
    name = _name(values["name"], row.title, errors)
    vault = _vault(values["vault"], tags, rules, slug=row.slug_vault, errors=errors)
    totp: Secret | None = None
    if totp_text.strip():
        try:
            totp = parse_totp(totp_text)
        except InputError as exc:
            errors.append(f"TOTP: {exc.message}")
    if errors:
        raise _BadRow("; ".join(dict.fromkeys(errors)))
    return ItemInput(
        name=name,
        vault=vault,
        username=values["username"].strip(),
        url=values["url"].strip(),
        notes=_clean_notes(values["notes"]),
        tags=tags,
        # Passwords are kept byte for byte: leading or trailing spaces may be part of them.
        password=Secret(password) if password else None,
        totp=totp,
        source_row=row.number,
    )


def _text_field(fields: dict[str, Any], key: str, errors: list[str]) -> str:
    value = fields.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        # Name the field and the type only: the value may be a secret.
        errors.append(f"{key!r} must be a string, not {_json_type(value)}")
        return ""
    return value


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number (put it in quotes)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _name(explicit: str, title: str, errors: list[str]) -> str:
    if explicit.strip():
        name = explicit.strip()
        if not is_valid_name(name):
            suggestion = slugify(name)
            example = f" (e.g. {suggestion!r})" if suggestion else ""
            errors.append(f"the name {name!r} is not valid: use {_NAME_RULE}{example}")
        return name
    if not title:
        errors.append("no title (and no name): every item needs one")
        return ""
    name = slugify(title)
    if not name:
        errors.append("the title has no letters or digits to make an item name from; give the item a name")
    return name


def _vault(value: str, tags: tuple[str, ...], rules: VaultRules, *, slug: bool, errors: list[str]) -> str:
    raw = value.strip()
    if raw.lower() in rules.by_vault:
        return rules.by_vault[raw.lower()]
    lowered = [tag.lower() for tag in tags]
    for targets, what in (([rules.by_tag[t] for t in lowered if t in rules.by_tag], "the vault map's [tags]"),
                          ([t for t in lowered if t in (rules.tag_vaults or ())], "policy vaults")):
        distinct = list(dict.fromkeys(targets))
        if len(distinct) == 1:
            return distinct[0]
        if len(distinct) > 1:
            # Fail closed: a credential tagged for two customers must not land in either by chance.
            errors.append(f"its tags name several vaults ({', '.join(distinct)}, by {what}); "
                          "keep one such tag, or map the row in --vault-map")
            return ""
    if not raw:
        if rules.default is None:
            why = ("no tag names a policy vault" if rules.tag_vaults is not None
                   else "neither its vault nor its tags are in the vault map")
            errors.append(f"no vault for it: {why}; tag it, map it, or give --vault for such rows")
            return ""
        return rules.default
    vault = slugify(raw) if slug else raw
    if not is_valid_name(vault):
        errors.append(f"the vault {raw!r} is not a valid vault name: use {_NAME_RULE}")
    return vault


def _tags(value: object, errors: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    parts: Iterator[str]
    if isinstance(value, str):
        parts = iter(re.split(r"[;,]", value))
    elif isinstance(value, list) and all(isinstance(tag, str) for tag in value):
        parts = iter(value)
    else:
        errors.append("'tags' must be a list of strings or a ';'-separated string")
        return ()
    return tuple(dict.fromkeys(tag.strip() for tag in parts if tag.strip()))


def _clean_notes(notes: str) -> str:
    return notes.replace("\r\n", "\n").replace("\r", "\n").strip()
