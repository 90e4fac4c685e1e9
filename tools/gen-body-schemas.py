#!/usr/bin/env python3
"""Generates src/catalog/bodies.rs, the request body schemas the gateway validates against,
from the official Python SDK's request models (`huaweicloudsdkcloudrtc` on PyPI).

    tools/gen-body-schemas.py 3.1.219                      # pip-downloads that version
    tools/gen-body-schemas.py 3.1.219 --sdk-dir /tmp/sdk   # an unpacked wheel or sdist

For every `<Operation>Request` model (v1 and v2) with a `body` field, the body model and every
model it reaches are read without importing the SDK (only `ast`): `openapi_types` gives each
field's type, `attribute_map` its JSON key, and a field is required when `__init__` assigns it
unconditionally (optional ones sit under `if x is not None:`). Python 3 standard library only.
"""

import argparse
import ast
import pathlib
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile

PACKAGE = "huaweicloudsdkcloudrtc"
SCRIPT = "tools/gen-body-schemas.py"
# SDK scalar type -> the Rust `Item` variant. Dates travel as strings in JSON.
SCALARS = {
    "str": "Str",
    "int": "Int",
    "float": "Float",
    "bool": "Bool",
    "object": "Any",
    "date": "Str",
    "datetime": "Str",
}


def fetch(version, into):
    """Downloads the pinned SDK version with pip and unpacks it; returns the unpacked root."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", f"{PACKAGE}=={version}", "--no-deps", "-d", str(into)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    archives = sorted(into.iterdir())
    if len(archives) != 1:
        sys.exit(f"expected one downloaded archive in {into}, found {archives}")
    root = into / "unpacked"
    if archives[0].suffix == ".whl":
        with zipfile.ZipFile(archives[0]) as z:
            z.extractall(root)
    else:
        with tarfile.open(archives[0]) as t:
            t.extractall(root, filter="data")
    return root


def package_dir(root):
    """The `huaweicloudsdkcloudrtc` directory under an unpacked wheel or sdist."""
    found = sorted(root.glob(f"**/{PACKAGE}/v2/model"))
    if not found:
        sys.exit(f"no {PACKAGE}/v2/model under {root}")
    return found[0].parent.parent


def unpacked_version(root, pkg):
    """The version the unpacked files declare, so the header never names the wrong one."""
    for meta in list(root.glob("**/*.dist-info/METADATA")) + list(root.glob("**/PKG-INFO")):
        match = re.search(r"^Version: (\S+)$", meta.read_text(encoding="utf-8"), re.M)
        if match:
            return match.group(1)
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", (pkg / "__init__.py").read_text(encoding="utf-8"))
    return match.group(1) if match else None


class Model:
    def __init__(self, name, types, keys, required):
        self.name, self.types, self.keys, self.required = name, types, keys, required


def literal_dict(node):
    return {k.value: v.value for k, v in zip(node.keys, node.values)}


def required_fields(init):
    """Attributes `__init__` assigns at its top level (`self.x = x`), not under an `if`."""
    required = set()
    for stmt in init.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target = stmt.targets[0]
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
                and isinstance(stmt.value, ast.Name)
                and stmt.value.id == target.attr
            ):
                required.add(target.attr)
    return required


def read_models(model_dir):
    models = {}
    for path in sorted(model_dir.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            types, keys, init = None, None, None
            for stmt in cls.body:
                if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                    if stmt.targets[0].id == "openapi_types":
                        types = literal_dict(stmt.value)
                    elif stmt.targets[0].id == "attribute_map":
                        keys = literal_dict(stmt.value)
                elif isinstance(stmt, ast.FunctionDef) and stmt.name == "__init__":
                    init = stmt
            if types is None or keys is None or init is None:
                continue
            unguarded = required_fields(init)
            models[cls.name] = Model(cls.name, types, keys, {a for a in types if a in unguarded})
    return models


def parse_type(text):
    """`list[MixLayoutPane]` -> ("List", "MixLayoutPane"); `dict(str, str)` -> ("Map", "str")."""
    text = text.strip()
    match = re.fullmatch(r"list\[(.+)\]", text)
    if match:
        return ("List", match.group(1).strip())
    match = re.fullmatch(r"dict\(str,\s*(.+)\)", text)
    if match:
        return ("Map", match.group(1).strip())
    return ("One", text)


def const_name(model):
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", model).upper()


def item(text, models, reached, where):
    if text in SCALARS:
        return f"Item::{SCALARS[text]}"
    if text in models:
        reached.append(text)
        return f"Item::Model(&{const_name(text)})"
    sys.exit(f"{where}: type {text!r} is neither a known scalar nor a model; teach {SCRIPT} about it")


def field_type(text, models, reached, where):
    shape, inner = parse_type(text)
    if shape != "One" and parse_type(inner)[0] != "One":
        sys.exit(f"{where}: nested container {text!r} is not supported; teach {SCRIPT} about it")
    rust = item(inner, models, reached, where)
    return rust.replace("Item::", "Type::", 1) if shape == "One" else f"Type::{shape}({rust})"


def operations(pkg):
    """(operation, version, body model) for every request model with a body, by operation name."""
    found = []
    for version in ("v1", "v2"):
        model_dir = pkg / version / "model"
        if not model_dir.is_dir():
            continue
        models = read_models(model_dir)
        for name, model in sorted(models.items()):
            if name.endswith("Request") and "body" in model.types:
                found.append((name[: -len("Request")], version, model.types["body"], models))
    return sorted(found)


def render(sdk_version, pkg):
    ops = operations(pkg)
    emitted, queue, blocks = {}, [], []
    table = []
    for op, version, body, models in ops:
        if body not in models:
            sys.exit(f"{op}Request: body type {body!r} is not a model")
        table.append(f'    ("{op}", &{const_name(body)}),')
        queue.append((body, models))
    while queue:
        name, models = queue.pop(0)
        model, reached, fields = models[name], [], []
        if name in emitted:
            # v1 and v2 models share one Rust namespace: the same name must mean the same model.
            seen = emitted[name]
            if (seen.types, seen.keys, seen.required) != (model.types, model.keys, model.required):
                sys.exit(f"two different models are named {name}; teach {SCRIPT} to tell them apart")
            continue
        emitted[name] = model
        for attr, text in model.types.items():
            ty = field_type(text, models, reached, f"{name}.{attr}")
            required = "true" if attr in model.required else "false"
            fields.append(f'        Field {{ key: "{model.keys[attr]}", required: {required}, of: {ty} }},')
        queue.extend((r, models) for r in reached)
        blocks.append((name, fields))
    out = [
        f"//! Request body schemas, one per operation that takes a body. Generated by `{SCRIPT}` from",
        f"//! `{PACKAGE}` {sdk_version} (PyPI): each SDK model's `openapi_types` (types), `attribute_map`",
        "//! (JSON keys) and `__init__` (required: assigned without an `is not None` guard).",
        f"//! Do not edit; run `python3 {SCRIPT} {sdk_version}` instead.",
        "",
        "use super::schema::{Field, Item, Model, Type};",
        "",
        f'/// The SDK version these schemas were generated from.',
        f'pub(super) const SDK_VERSION: &str = "{sdk_version}";',
        "",
        "/// Operation name -> its body model.",
        f"pub(super) static BODIES: [(&str, &Model); {len(table)}] = [",
        *table,
        "];",
    ]
    for name, fields in sorted(blocks):
        out += [
            "",
            f"static {const_name(name)}: Model = Model {{",
            f'    name: "{name}",',
            "    fields: &[",
            *fields,
            "    ],",
            "};",
        ]
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", help=f"the {PACKAGE} version to read, e.g. 3.1.219")
    parser.add_argument("--sdk-dir", type=pathlib.Path, help="an unpacked wheel or sdist instead of downloading")
    parser.add_argument("-o", "--output", type=pathlib.Path, default=pathlib.Path("src/catalog/bodies.rs"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.sdk_dir or fetch(args.version, pathlib.Path(tmp))
        pkg = package_dir(root)
        found = unpacked_version(root, pkg)
        if found is not None and found != args.version:
            sys.exit(f"{root} holds {PACKAGE} {found}, not {args.version}")
        args.output.write_text(render(args.version, pkg), encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
