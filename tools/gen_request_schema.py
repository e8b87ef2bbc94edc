#!/usr/bin/env python3
"""Generates src/protocol/schema_gen.rs: the wire layout of every request the
broker decodes with the kafka-protocol crate, as data for src/protocol/bounds.rs.

Why: the crate decodes an array as `Vec::with_capacity(count)` with the count
taken from the wire before it checks that the bytes are there, so a 14-byte
frame can ask for a 150 GB allocation and abort the broker. bounds.rs walks a
request body with this table, in the order the crate's decoder reads it, and
refuses counts and lengths the body cannot hold before the crate sees them.

How: the crate's `impl Decodable for X { fn decode(...) }` bodies are
generated code with a small, regular grammar (version checks, `let f = if
version >= N { types::A.decode(buf)? } else { default };`, a tagged-field
loop with a `match tag`). This script parses exactly that grammar from the
crate source that `cargo metadata` points at, evaluates it for every version
the struct supports, and fails loudly (exit 1) on anything it does not
recognise rather than guess.

Usage:
    python3 tools/gen_request_schema.py            # rewrite src/protocol/schema_gen.rs
    python3 tools/gen_request_schema.py --out F    # write elsewhere (ci/test diffs it)

Dependency-free (Python 3.9+ standard library only).
"""

import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DEFAULT = os.path.join(ROOT, "src", "protocol", "schema_gen.rs")

# Structs the broker decodes from client bytes outside the per-API dispatch:
# (crate module, struct). ConsumerProtocolSubscription: group/state.rs reads the
# consumer protocol metadata of JoinGroup members. RequestHeader:
# protocol/mod.rs decode_request.
EXTRA_ROOTS = [
    ("consumer_protocol_subscription", "ConsumerProtocolSubscription"),
    ("request_header", "RequestHeader"),
]

# The highest version probed when evaluating version conditions. Every
# struct's own version check must fall inside it.
VERSION_PROBE_MAX = 127

PRIMITIVES = {
    "Int8": "Int8",
    "Int16": "Int16",
    "UInt16": "UInt16",
    "Int32": "Int32",
    "UInt32": "UInt32",
    "Int64": "Int64",
    "Float64": "Float64",
    "Boolean": "Bool",
    "Uuid": "Uuid",
    "UnsignedVarInt": "UnsignedVarInt",
    "VarInt": "VarInt",
    "UnsignedVarLong": "UnsignedVarLong",
    "VarLong": "VarLong",
}
LENGTH_PREFIXED = {
    "String": "String",
    "CompactString": "CompactString",
    "Bytes": "Bytes",
    "CompactBytes": "CompactBytes",
}


class GenError(Exception):
    pass


def fail(msg):
    raise GenError(msg)


# ---------------------------------------------------------------- locating


def crate_dir():
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--offline"],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        out = subprocess.run(
            ["cargo", "metadata", "--format-version", "1"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
    meta = json.loads(out.stdout)
    found = [p for p in meta["packages"] if p["name"] == "kafka-protocol"]
    if len(found) != 1:
        fail(f"expected one kafka-protocol package in cargo metadata, found {len(found)}")
    pkg = found[0]
    return os.path.dirname(pkg["manifest_path"]), pkg["version"]


def api_roots():
    """(ApiKey variant, module, struct) for each API in versions.rs, checked
    against the dispatch in server/handlers/mod.rs."""
    with open(os.path.join(ROOT, "src", "protocol", "versions.rs")) as f:
        versions = f.read()
    m = re.search(r"pub const API_VERSIONS[^=]*=\s*&\[(.*?)\];", versions, re.S)
    if not m:
        fail("src/protocol/versions.rs: API_VERSIONS table not found")
    apis = re.findall(r"\(ApiKey::(\w+),\s*-?\d+,\s*-?\d+\)", m.group(1))
    if not apis:
        fail("src/protocol/versions.rs: no (ApiKey::X, min, max) rows in API_VERSIONS")
    with open(os.path.join(ROOT, "src", "server", "handlers", "mod.rs")) as f:
        handlers = f.read()
    dispatched = set(re.findall(r"ApiKey::(\w+)\s*=>", handlers))
    missing = sorted(dispatched - set(apis))
    if missing:
        fail(f"handlers/mod.rs dispatches {missing} that API_VERSIONS lacks; add them there")
    roots = []
    for api in apis:
        module = re.sub(r"(?<!^)(?=[A-Z])", "_", api).lower() + "_request"
        roots.append((api, module, api + "Request"))
    return roots


# ---------------------------------------------------------------- lexing

TOKEN = re.compile(
    r"""(?P<ws>\s+|//[^\n]*)
      | (?P<str>"(?:\\.|[^"\\])*")
      | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<num>\d+)
      | (?P<op>::|=>|>=|<=|==|!=|&&|\|\||\.\.|[{}()\[\];,.?=<>!+\-*&:|])""",
    re.X,
)


def lex(text, where):
    toks = []
    pos = 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m:
            fail(f"{where}: cannot lex {text[pos:pos + 40]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            toks.append(m.group(m.lastgroup))
    return toks


class Parser:
    def __init__(self, toks, where):
        self.t = toks
        self.i = 0
        self.where = where

    def peek(self, k=0):
        j = self.i + k
        return self.t[j] if j < len(self.t) else None

    def next(self):
        tok = self.peek()
        if tok is None:
            self.err("unexpected end of decode body")
        self.i += 1
        return tok

    def err(self, msg):
        ctx = " ".join(self.t[max(0, self.i - 8) : self.i + 8])
        fail(f"{self.where}: {msg} near `{ctx}`")

    def expect(self, *seq):
        for s in seq:
            tok = self.next()
            if tok != s:
                self.i -= 1
                self.err(f"expected `{s}`, found `{tok}`")

    def accept(self, *seq):
        if all(self.peek(k) == s for k, s in enumerate(seq)):
            self.i += len(seq)
            return True
        return False

    def ident(self):
        tok = self.next()
        if not re.fullmatch(r"[A-Za-z_]\w*", tok):
            self.i -= 1
            self.err(f"expected an identifier, found `{tok}`")
        return tok

    # cond := cmp (('&&'|'||') cmp)* ; cmp := version OP NUM
    def cond(self):
        parts = []
        while True:
            self.expect("version")
            op = self.next()
            if op not in (">=", "<=", "==", "!=", "<", ">"):
                self.err(f"unknown comparison `{op}`")
            num = self.next()
            if not num.isdigit():
                self.err(f"expected a version number, found `{num}`")
            parts.append(f"v {op} {num}")
            if self.peek() == "&&":
                self.next()
                parts.append("and")
            elif self.peek() == "||":
                self.next()
                parts.append("or")
            else:
                break
        src = " ".join(parts)
        return ("cond", src)

    def bail(self):
        self.expect("bail", "!", "(")
        depth = 1
        while depth:
            tok = self.next()
            depth += {"(": 1, ")": -1}.get(tok, 0)
        self.expect(";")
        return ("bail",)

    # typeexpr := types :: NAME [ '(' typeexpr ')' | '{' version '}' ]
    def typeexpr(self):
        self.expect("types", "::")
        name = self.ident()
        if self.accept("("):
            inner = self.typeexpr()
            self.expect(")")
            return (name, inner)
        if self.accept("{", "version", "}"):
            return (name, "version")
        return (name, None)

    def decode_call(self):
        ty = self.typeexpr()
        self.expect(".", "decode", "(", "buf", ")", "?")
        return ("decode", ty)

    # valexpr := if cond { block } else { block } | decode | default
    def valexpr(self):
        if self.peek() == "if":
            self.next()
            c = self.cond()
            self.expect("{")
            then = self.block()
            self.expect("}")
            self.expect("else", "{")
            other = self.block()
            self.expect("}")
            return ("if", c, then, other)
        if self.peek() == "types":
            return self.decode_call()
        # A default value: balanced tokens up to `;` or the closing `}`.
        depth = 0
        start = self.i
        while True:
            tok = self.peek()
            if tok is None:
                self.err("unterminated default value")
            if depth == 0 and tok in (";", "}"):
                break
            if tok in ("(", "{", "["):
                depth += 1
            elif tok in (")", "}", "]"):
                depth -= 1
            if tok in ("decode", "buf", "bail", "types", "version"):
                self.err(f"default value uses `{tok}`: not a construct this generator knows")
            self.next()
        if self.i == start:
            self.err("empty value")
        return ("default", " ".join(self.t[start : self.i]))

    def block(self):
        if self.peek() == "bail":
            return self.bail()
        return self.valexpr()

    # stmt (inside a tag arm) := if cond { stmt } else { stmt } | NAME = valexpr ; | bail
    def arm_stmt(self):
        if self.peek() == "if":
            self.next()
            c = self.cond()
            self.expect("{")
            then = self.arm_stmt()
            self.expect("}", "else", "{")
            other = self.arm_stmt()
            self.expect("}")
            return ("if_stmt", c, then, other)
        if self.peek() == "bail":
            return self.bail()
        name = self.ident()
        self.expect("=")
        val = self.valexpr()
        self.expect(";")
        return ("assign", name, val)

    def unknown_tag_body(self):
        self.expect("let", "unknown_value", "=", "buf", ".", "try_get_bytes", "(")
        self.expect("size", "as", "usize", ")", "?", ";")
        self.expect("unknown_tagged_fields", ".", "insert", "(", "tag", "as", "i32", ",")
        self.expect("unknown_value", ")", ";")

    def tagged_loop(self):
        """Returns [(tag, arm_stmt)] for the known tags."""
        self.expect("let", "num_tagged_fields", "=", "types", "::", "UnsignedVarInt", ".")
        self.expect("decode", "(", "buf", ")", "?", ";")
        self.expect("for", "_", "in", "0", "..", "num_tagged_fields", "{")
        self.expect("let", "tag", ":", "u32", "=", "types", "::", "UnsignedVarInt", ".")
        self.expect("decode", "(", "buf", ")", "?", ";")
        self.expect("let", "size", ":", "u32", "=", "types", "::", "UnsignedVarInt", ".")
        self.expect("decode", "(", "buf", ")", "?", ";")
        arms = []
        if self.accept("match", "tag", "{"):
            while not self.accept("_", "=>", "{"):
                tag = self.next()
                if not tag.isdigit():
                    self.err(f"expected a tag number, found `{tag}`")
                self.expect("=>", "{")
                arms.append((int(tag), self.arm_stmt()))
                self.expect("}")
            self.unknown_tag_body()
            self.expect("}", "}")
        else:
            self.unknown_tag_body()
        self.expect("}")
        return arms


def parse_decode(text, where):
    """Parses one generated decode body into
    (version_cond, [(field, valexpr)], tagged_cond or None, [(tag, arm)])."""
    p = Parser(lex(text, where), where)
    p.expect("if")
    vcheck = p.cond()
    p.expect("{")
    p.bail()
    p.expect("}")
    fields = []
    tagged_cond = None
    arms = []
    while True:
        if p.accept("Ok", "(", "Self", "{"):
            break
        if p.peek() == "let" and p.peek(1) == "num_tagged_fields" and tagged_cond is None:
            # Flexible in every version: the tagged-field loop is unconditional.
            tagged_cond = ("cond", "True")
            arms = p.tagged_loop()
            continue
        if p.peek() == "let":
            p.next()
            p.accept("mut")
            name = p.ident()
            if name == "unknown_tagged_fields":
                p.expect("=", "BTreeMap", "::", "new", "(", ")", ";")
                continue
            p.expect("=")
            val = p.valexpr()
            p.expect(";")
            fields.append((name, val))
            continue
        if p.peek() == "if" and tagged_cond is None:
            p.next()
            tagged_cond = p.cond()
            p.expect("{")
            arms = p.tagged_loop()
            p.expect("}")
            continue
        p.err(f"unknown statement starting with `{p.peek()}`")
    return vcheck, fields, tagged_cond, arms


# ---------------------------------------------------------------- crate files


def find_block(text, start):
    """Index just past the `}` matching the first `{` at or after start."""
    i = text.index("{", start)
    depth = 0
    while i < len(text):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    fail("unbalanced braces")


class Module:
    def __init__(self, src_dir, module):
        self.module = module
        path = os.path.join(src_dir, "messages", module + ".rs")
        if not os.path.exists(path):
            fail(f"kafka-protocol has no src/messages/{module}.rs")
        with open(path) as f:
            self.text = f.read()
        self.fields = {}  # struct -> {field: rust type}
        for m in re.finditer(r"\npub struct (\w+) \{", self.text):
            end = find_block(self.text, m.start())
            body = self.text[m.end() : end - 1]
            self.fields[m.group(1)] = dict(re.findall(r"\n    pub (\w+): (.+),\n", body))
        self.decoders = {}
        for m in re.finditer(r"\nimpl Decodable for (\w+) \{", self.text):
            end = find_block(self.text, m.start())
            impl = self.text[m.end() : end - 1]
            fm = re.search(r"fn decode<B: ByteBuf>\(buf: &mut B, version: i16\) -> Result<Self> \{", impl)
            if not fm:
                fail(f"{module}.rs: decode of {m.group(1)} has an unknown signature")
            fend = find_block(impl, fm.start())
            self.decoders[m.group(1)] = impl[fm.end() : fend - 1]


def versions_where(cond, where):
    src = cond[1]
    return [v for v in range(0, VERSION_PROBE_MAX + 1) if eval(src, {}, {"v": v})]  # noqa: S307 (tokens checked by Parser.cond)


def strip(rust, wrapper):
    if rust.startswith(wrapper + "<") and rust.endswith(">"):
        return rust[len(wrapper) + 1 : -1]
    return None


class Generator:
    def __init__(self, src_dir):
        self.src_dir = src_dir
        self.modules = {}
        self.structs = {}  # (module, struct) -> dict
        self.order = []

    def module(self, name):
        if name not in self.modules:
            self.modules[name] = Module(self.src_dir, name)
        return self.modules[name]

    @staticmethod
    def const_name(module, struct):
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", struct).upper()
        mod = module.upper()
        if snake == mod:
            return mod
        return f"{mod}__{snake}"

    def ty(self, texpr, rust, module, where):
        """Rust `Ty` expression for a decode type and the field's declared type."""
        name, arg = texpr
        if name in PRIMITIVES:
            if arg is not None:
                fail(f"{where}: {name} with an argument")
            return f"Ty::{PRIMITIVES[name]}"
        if name in LENGTH_PREFIXED:
            if arg is not None:
                fail(f"{where}: {name} with an argument")
            nullable = strip(rust, "Option") is not None
            return f"Ty::{LENGTH_PREFIXED[name]} {{ nullable: {str(nullable).lower()} }}"
        if name in ("Array", "CompactArray"):
            if not isinstance(arg, tuple):
                fail(f"{where}: {name} without an element type")
            inner = strip(rust, "Option")
            nullable = inner is not None
            elem_rust = strip(inner if nullable else rust, "Vec")
            if elem_rust is None:
                fail(f"{where}: {name} decoded into `{rust}`, not a Vec")
            elem = self.ty(arg, elem_rust, module, where)
            return f"Ty::{name} {{ nullable: {str(nullable).lower()}, elem: &{elem} }}"
        if name in ("Struct", "OptionStruct"):
            if arg != "version":
                fail(f"{where}: {name} without `{{ version }}`")
            target = rust
            if name == "OptionStruct":
                target = strip(rust, "Option")
                if target is None:
                    fail(f"{where}: OptionStruct decoded into `{rust}`, not an Option")
            if target not in self.module(module).fields:
                fail(f"{where}: struct type `{rust}` is not defined in {module}.rs")
            self.visit(module, target)
            return f"Ty::{name}(&{self.const_name(module, target)})"
        fail(f"{where}: unknown wire type types::{name}")

    def eval_val(self, node, v, rust, module, where):
        """The wire type read at version v: a Ty string, None (absent), or 'bail'."""
        kind = node[0]
        if kind == "decode":
            return self.ty(node[1], rust, module, where)
        if kind == "default":
            return None
        if kind == "bail":
            return "bail"
        if kind == "if":
            branch = node[2] if v in self.cond_versions(node[1], where) else node[3]
            return self.eval_val(branch, v, rust, module, where)
        fail(f"{where}: unknown node {kind}")

    def cond_versions(self, cond, where):
        return set(versions_where(cond, where))

    def eval_arm(self, node, v, fields, module, where):
        """(field name, Ty string or None or 'bail') of a tag arm at version v."""
        kind = node[0]
        if kind == "bail":
            return None, "bail"
        if kind == "if_stmt":
            branch = node[2] if v in self.cond_versions(node[1], where) else node[3]
            return self.eval_arm(branch, v, fields, module, where)
        if kind == "assign":
            name = node[1]
            if name not in fields:
                fail(f"{where}: tag assigns `{name}`, which the struct does not declare")
            return name, self.eval_val(node[2], v, fields[name], module, f"{where}.{name}")
        fail(f"{where}: unknown arm {kind}")

    @staticmethod
    def alts(per_version):
        """[(lo, hi, ty)] runs of equal, present types."""
        out = []
        for v, ty in per_version:
            if ty is None:
                continue
            if out and out[-1][2] == ty and out[-1][1] == v - 1:
                out[-1] = (out[-1][0], v, ty)
            else:
                out.append((v, v, ty))
        return out

    def visit(self, module, struct):
        key = (module, struct)
        if key in self.structs:
            return
        self.structs[key] = None  # in progress (no recursive structs expected)
        mod = self.module(module)
        where = f"{module}.rs {struct}"
        if struct not in mod.decoders:
            fail(f"{where}: no `impl Decodable`")
        if struct not in mod.fields:
            fail(f"{where}: no struct definition")
        declared = mod.fields[struct]
        vcheck, fields, tagged_cond, arms = parse_decode(mod.decoders[struct], where)
        bad = set(versions_where(vcheck, where))
        valid = [v for v in range(0, VERSION_PROBE_MAX + 1) if v not in bad]
        if not valid or valid != list(range(valid[0], valid[-1] + 1)) or valid[-1] == VERSION_PROBE_MAX:
            fail(f"{where}: version check `{vcheck[1]}` does not leave one bounded range")
        vmin, vmax = valid[0], valid[-1]
        out_fields = []
        for name, val in fields:
            if name not in declared:
                fail(f"{where}: decodes `{name}`, which the struct does not declare")
            per = []
            for v in valid:
                ty = self.eval_val(val, v, declared[name], module, f"{where}.{name}")
                if ty == "bail":
                    fail(f"{where}.{name}: bails for version {v} outside a tag arm")
                per.append((v, ty))
            alts = self.alts(per)
            if alts:
                out_fields.append((name, alts))
        flexible = None
        if tagged_cond is not None:
            fl = [v for v in valid if v in self.cond_versions(tagged_cond, where)]
            if fl and fl != list(range(fl[0], vmax + 1)):
                fail(f"{where}: tagged fields under `{tagged_cond[1]}`, not `version >= N`")
            flexible = fl[0] if fl else None
        out_tags = []
        for tag, arm in arms:
            per = []
            names = set()
            for v in valid:
                name, ty = self.eval_arm(arm, v, declared, module, f"{where} tag {tag}")
                if name is not None:
                    names.add(name)
                per.append((v, None if ty == "bail" else ty))
                if ty is None:
                    fail(f"{where} tag {tag}: assigns a default, not a decoded value")
            if len(names) != 1:
                fail(f"{where} tag {tag}: assigns {sorted(names)}, expected one field")
            out_tags.append((tag, names.pop(), self.alts(per)))
        self.structs[key] = {
            "name": struct,
            "versions": (vmin, vmax),
            "flexible": flexible,
            "fields": out_fields,
            "tagged": out_tags,
        }
        self.order.append(key)


def render(gen, roots, version):
    lines = [
        "// @generated by tools/gen_request_schema.py from kafka-protocol " + version + ".",
        "// Do not edit. Regenerate after changing the kafka-protocol version or the",
        "// API table (src/protocol/versions.rs, src/server/handlers/mod.rs):",
        "//     python3 tools/gen_request_schema.py",
        "// ci/test fails when this file is stale.",
        "//! The wire layout of each request struct the broker decodes with the",
        "//! kafka-protocol crate, in the order the crate's decoder reads it; the",
        "//! table that `protocol::bounds` walks.",
        "",
        "use kafka_protocol::messages::ApiKey;",
        "",
        "use super::bounds::{Field, StructSchema, TaggedField, Ty};",
        "",
    ]
    for module, struct in gen.order:
        s = gen.structs[(module, struct)]
        flex = "None" if s["flexible"] is None else f"Some({s['flexible']})"
        lines.append(f"/// `{module}::{struct}`")
        lines.append(f"pub static {gen.const_name(module, struct)}: StructSchema = StructSchema {{")
        lines.append(f'    name: "{struct}",')
        lines.append(f"    versions: ({s['versions'][0]}, {s['versions'][1]}),")
        lines.append(f"    flexible_from: {flex},")
        lines.append("    fields: &[")
        for name, alts in s["fields"]:
            alts_src = ", ".join(f"({lo}, {hi}, {ty})" for lo, hi, ty in alts)
            lines.append(f'        Field {{ name: "{name}", alts: &[{alts_src}] }},')
        lines.append("    ],")
        if s["tagged"]:
            lines.append("    tagged: &[")
            for tag, name, alts in s["tagged"]:
                alts_src = ", ".join(f"({lo}, {hi}, {ty})" for lo, hi, ty in alts)
                lines.append(f'        TaggedField {{ tag: {tag}, name: "{name}", alts: &[{alts_src}] }},')
            lines.append("    ],")
        else:
            lines.append("    tagged: &[],")
        lines.append("};")
        lines.append("")
    lines.append("/// The schema of the request body of `api`, None for APIs the broker does")
    lines.append("/// not decode.")
    lines.append("pub fn request(api: ApiKey) -> Option<&'static StructSchema> {")
    lines.append("    match api {")
    for api, module, struct in roots:
        lines.append(f"        ApiKey::{api} => Some(&{gen.const_name(module, struct)}),")
    lines.append("        _ => None,")
    lines.append("    }")
    lines.append("}")
    lines.append("")
    lines.append("/// Every API `request` answers for, in API_VERSIONS order.")
    lines.append("pub const REQUEST_APIS: &[ApiKey] = &[")
    for api, _, _ in roots:
        lines.append(f"    ApiKey::{api},")
    lines.append("];")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT_DEFAULT, help="output file (default: %(default)s)")
    args = ap.parse_args()
    try:
        crate, version = crate_dir()
        src_dir = os.path.join(crate, "src")
        roots = api_roots()
        gen = Generator(src_dir)
        for _, module, struct in roots:
            gen.visit(module, struct)
        for module, struct in EXTRA_ROOTS:
            gen.visit(module, struct)
        text = render(gen, roots, version)
    except GenError as e:
        print(f"gen_request_schema: {e}", file=sys.stderr)
        return 1
    with open(args.out, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
