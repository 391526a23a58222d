"""Checked, not promised (SPEC section 11): today's Kafka interface against the last release's, both as
AsyncAPI documents. A message keeps its schema_version only when the one change is an added optional
field; anything else to a (type, version) the last release knows breaks a reader of one side or the
other. A version the last release sends must still be read, and a version sent today must have been
read by the last release already (expand, then contract: docs/architecture.md, "Changing a message").

    python -m shared.contracts.compat   # docs/asyncapi.yaml against the release in tests/compat/previous-release
"""
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS = ROOT / "tests" / "compat" / "previous-release"
NARROWING = {  # a keyword, and which way a change of its value accepts less
    "maxLength": min, "maxItems": min, "maximum": min, "exclusiveMaximum": min,
    "minLength": max, "minItems": max, "minimum": max, "exclusiveMinimum": max,
}
ITEM_FIELDS = "Fields"  # components/schemas named *Fields: what an item message's `fields` holds


def previous_release() -> tuple[str, str]:
    """(version, commit) of the last release, as `make release` wrote them."""
    version, commit = PREVIOUS.read_text().split()[:2]
    return version, commit


def recorded(version: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docs" / "contracts" / version / "asyncapi.yaml").read_text())


class _Schemas:
    """One document's schemas, with its $refs resolved."""

    def __init__(self, doc: dict[str, Any]):
        self.named = doc.get("components", {}).get("schemas", {})

    def resolve(self, schema: Any) -> dict[str, Any]:
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < 32:
            schema, seen = self.named.get(schema["$ref"].rsplit("/", 1)[-1], {}), seen + 1
        return schema if isinstance(schema, dict) else {}

    def branches(self, schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The schema split by the JSON type each part accepts ("any" for no constraint); of a union of
        several named objects, each by its name ("object Terms"), so that each is compared with its own."""
        schema = self.resolve(schema)
        parts = schema.get("anyOf") or schema.get("oneOf")
        if parts:
            found: dict[str, dict[str, Any]] = {}
            objects = [p for p in parts if "object" in self.branches(p)]
            for part in parts:
                for kind, branch in self.branches(part).items():
                    named = kind == "object" and len(objects) > 1 and isinstance(part, dict) and "$ref" in part
                    found[f"object {part['$ref'].rsplit('/', 1)[-1]}" if named else kind] = branch
            return found
        if "const" in schema or "enum" in schema:
            values = [schema["const"]] if "const" in schema else schema["enum"]
            kinds = {_json_type(v) for v in values}
            return {kind: schema for kind in kinds}
        kinds = schema.get("type")
        if kinds is None:
            return {"object": schema} if "properties" in schema else {"any": schema}
        return {kind: schema for kind in ([kinds] if isinstance(kinds, str) else kinds)}


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null",
            list: "array", dict: "object"}[type(value)]


def _accepts(kinds: set[str], kind: str) -> bool:
    return "any" in kinds or kind in kinds or (kind == "integer" and "number" in kinds)


def schema_changes(old: Any, new: Any, old_doc: dict, new_doc: dict, where: str = "") -> list[str]:
    """What breaks a reader between two schemas of one message: a removed field, a new required one,
    a narrowed or widened type, a removed or added enum value, a tighter or looser limit."""
    return _compare(old, new, _Schemas(old_doc), _Schemas(new_doc), where, set())


def _compare(old: Any, new: Any, olds: _Schemas, news: _Schemas, where: str, within: set) -> list[str]:
    key = (id(olds.resolve(old)), id(news.resolve(new)))
    if key in within:  # a recursive schema, already being compared further up
        return []
    within.add(key)
    try:
        return _compare_parts(old, new, olds, news, where, within)
    finally:
        within.discard(key)


def _compare_parts(old: Any, new: Any, olds: _Schemas, news: _Schemas, where: str, seen: set) -> list[str]:
    at = where or "the payload"
    old_parts, new_parts = olds.branches(old), news.branches(new)
    problems = [f"{at}: narrowed type, no longer accepts {kind}" for kind in old_parts
                if not _accepts(set(new_parts), kind)]
    problems += [f"{at}: widened type, now accepts {kind} (a reader of the last release refuses it)"
                 for kind in new_parts if not _accepts(set(old_parts), kind)]
    for kind in old_parts.keys() & new_parts.keys():
        problems += _same_type(old_parts[kind], new_parts[kind], olds, news, at, where, seen)
    return problems


def _same_type(old: dict, new: dict, olds: _Schemas, news: _Schemas, at: str, where: str, seen: set) -> list[str]:
    problems = []
    old_values = [old["const"]] if "const" in old else old.get("enum")
    new_values = [new["const"]] if "const" in new else new.get("enum")
    if old_values is None and new_values is not None:
        problems.append(f"{at}: narrowed to the values {new_values!r}")
    elif old_values is not None and new_values is None:
        problems.append(f"{at}: widened from the values {old_values!r} to any (a reader of the last release refuses others)")
    elif old_values is not None:
        problems += [f"{at}: removed enum value {v!r}" for v in old_values if v not in new_values]
        problems += [f"{at}: added enum value {v!r} (a reader of the last release refuses it)"
                     for v in new_values if v not in old_values]
    for keyword, stricter in NARROWING.items():
        before, after = old.get(keyword), new.get(keyword)
        if before != after:
            tighter = after is not None and (before is None or stricter(before, after) == after)
            problems.append(f"{at}: {'narrowed' if tighter else 'widened'} {keyword} {before} -> {after}")
    for keyword in ("pattern", "format"):
        if old.get(keyword) != new.get(keyword):
            problems.append(f"{at}: changed {keyword} {old.get(keyword)!r} -> {new.get(keyword)!r}")
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
    for name in old_props:
        path = f"{where}.{name}" if where else name
        if name not in new_props:
            problems.append(f"{path}: removed field")
        else:
            problems += _compare(old_props[name], new_props[name], olds, news, path, seen)
            if name in new_required and name not in old_required:
                problems.append(f"{path}: became required")
            if name in old_required and name not in new_required:
                problems.append(f"{path}: became optional (a reader of the last release requires it)")
    problems += [f"{where + '.' if where else ''}{name}: new required field"
                 for name in new_props if name not in old_props and name in new_required]
    if "items" in old or "items" in new:
        problems += _compare(old.get("items", {}), new.get("items", {}), olds, news, f"{where}[]", seen)
    return problems


def _routes(doc: dict[str, Any], action: str) -> dict[str, set[str]]:
    """Message id -> the operations that send (or receive) it."""
    found: dict[str, set[str]] = {}
    for op_id, operation in doc.get("operations", {}).items():
        if operation.get("action") == action:
            for ref in operation.get("messages", []):
                found.setdefault(ref["$ref"].rsplit("/", 1)[-1], set()).add(op_id)
    return found


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Everything in `new` that breaks a service built from `old`, or one built from `new` meeting `old`."""
    problems = []
    old_messages, new_messages = old["components"]["messages"], new["components"]["messages"]
    old_sent, new_sent = _routes(old, "send"), _routes(new, "send")
    old_read, new_read = _routes(old, "receive"), _routes(new, "receive")
    for message in sorted(old_sent):
        for reader in sorted(old_read.get(message, set()) - new_read.get(message, set())):
            problems.append(f"{message}: {reader} no longer reads it, and the last release sends it")
    for message in sorted(new_sent):
        known_type = any(m.rsplit(".v", 1)[0] == message.rsplit(".v", 1)[0] for m in old_messages)
        if not known_type and new_messages[message].get("x-informs-only"):
            continue  # a new type that only tells of a feature: an older reader parks it and loses only that
        for reader in sorted(new_read.get(message, set()) - old_read.get(message, set())):
            problems.append(f"{message}: sent, but {reader} of the last release does not read it yet (send it "
                            f"from the next release; mark it read-only in this one)")
    for message in sorted(old_messages.keys() & new_messages.keys()):
        problems += [f"{message}: {p}" for p in schema_changes(
            old_messages[message]["payload"], new_messages[message]["payload"], old, new)]
    old_schemas, new_schemas = old["components"]["schemas"], new["components"]["schemas"]
    for name in sorted(n for n in old_schemas if n.endswith(ITEM_FIELDS)):
        if name not in new_schemas:
            problems.append(f"{name}: removed (the item fields of a kind the last release sends)")
        else:
            problems += [f"{name}: {p}" for p in schema_changes(old_schemas[name], new_schemas[name], old, new)]
    return problems


def main() -> int:
    version, commit = previous_release()
    today = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
    problems = breaking_changes(recorded(version), today)
    for problem in problems:
        print(problem)
    verdict = f"{len(problems)} breaking change(s)" if problems else "compatible"
    print(f"today's contracts against release {version} ({commit[:12]}): {verdict}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
