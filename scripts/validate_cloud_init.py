#!/usr/bin/env python3
"""Validate cloud-init user-data offline with cloud-init's own schema check.

cloud-init is not on PyPI; its `cloudinit` package comes from Debian's `cloud-init` package,
unpacked (not installed) by `scripts/test`. Its schema module needs PyYAML, jsonschema,
requests, configobj, jsonpatch and jinja2 in this Python.

Usage: validate_cloud_init.py --cloud-init DIST_PACKAGES_DIR FILE...
Prints `FILE: valid` or `FILE: invalid: <errors>` per file; exits 1 when any is invalid.
"""

import argparse
import sys


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cloud-init", required=True, help="directory holding the `cloudinit` package")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    sys.path.insert(0, args.cloud_init)
    from cloudinit.config.schema import SchemaValidationError, get_schema, validate_cloudconfig_file

    schema = get_schema()
    bad = 0
    for path in args.files:
        try:
            validate_cloudconfig_file(path, schema)
            print(f"{path}: valid")
        except SchemaValidationError as e:
            bad += 1
            print(f"{path}: invalid: {e}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
