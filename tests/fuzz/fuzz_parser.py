"""Coverage-guided fuzzing of the HTTP parser (issue 7) with atheris.

    python tests/fuzz/fuzz_parser.py                   # 60 s, corpus in tests/fuzz/corpus
    python tests/fuzz/fuzz_parser.py -runs=20000       # any libFuzzer flag works

The corpus is seeded from the gunicorn request vectors in tests/data (which come from
../shared/corpus). The property: whatever the bytes, the parser either parses them or
raises the project's ProtocolError with a 4xx/5xx status; a parsed head's body framing
is consistent, and a chunked body decodes or is refused the same way, fed whole or a
byte at a time. Anything else (another exception, an assertion) is a crash, and a
crash becomes a regression case in tests/unit/test_fuzz_regressions.py.
"""

from __future__ import annotations

import base64
import json
import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

with atheris.instrument_imports():
    from tests.fuzz.properties import check

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
VECTORS = os.path.join(os.path.dirname(HERE), "data", "gunicorn-requests.json")


def seed_corpus(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(VECTORS) as f:
        cases = json.load(f)["cases"]
    for case in cases:
        path = os.path.join(directory, case["name"].replace("/", "_"))
        if not os.path.exists(path):
            with open(path, "wb") as out:
                out.write(base64.b64decode(case["raw_b64"]))


def main() -> None:
    args = sys.argv[1:]
    if not any(a.startswith(("-max_total_time", "-runs")) for a in args):
        args.append("-max_total_time=60")
    if not any(not a.startswith("-") for a in args):
        args.append(CORPUS)
    seed_corpus(next(a for a in args if not a.startswith("-")))  # the first corpus directory
    atheris.Setup([sys.argv[0], *args], check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
