#!/usr/bin/env python3
"""Reference validator: check security messages against the official Defender for IoT
schemas in shared/schemas (entry messageRoot.json), draft-07, with format checking on.

Usage: schema_validate.py SCHEMA_DIR < messages.jsonl
Prints one line per input line: "ok" or "invalid: <first error>". Exit 0 when every line
was checked (whatever the verdicts), 2 when the validator itself cannot work (for example
rfc3339-validator missing, which would silently turn off date-time checking).
"""
import json
import os
import sys

import jsonschema
from jsonschema import Draft7Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7


def main():
    schema_dir = sys.argv[1]
    checker = FormatChecker()
    # Without rfc3339-validator jsonschema does not check "date-time" at all.
    if "date-time" not in checker.checkers:
        print("rfc3339-validator is not installed: date-time would not be checked", file=sys.stderr)
        return 2
    if checker.conforms("2018-10-09 13:22:50Z", "date-time"):
        print("the date-time checker accepts a space-separated timestamp", file=sys.stderr)
        return 2
    resources = []
    for name in sorted(os.listdir(schema_dir)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(schema_dir, name), encoding="utf-8") as f:
            doc = json.load(f)
        if isinstance(doc, dict) and "$id" in doc and name.startswith("message"):
            resources.append((doc["$id"], Resource.from_contents(doc, default_specification=DRAFT7)))
    registry = Registry().with_resources(resources)
    root = registry.contents("messageRoot.json")
    validator = Draft7Validator(root, registry=registry, format_checker=checker)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
        except ValueError as e:
            print(f"invalid: not JSON: {e}")
            continue
        errors = sorted(validator.iter_errors(msg), key=lambda e: list(e.absolute_path))
        if errors:
            best = jsonschema.exceptions.best_match(errors)
            path = "/".join(str(p) for p in best.absolute_path)
            print(f"invalid: at /{path}: {best.message[:300]}")
        else:
            print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
