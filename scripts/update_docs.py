"""Regenerate the generated parts of the docs from the schema: config.example.ini and README's config table.
Run: .venv/bin/python -m scripts.update_docs"""
import os

from common.config import example_ini, markdown_reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def main() -> int:
    with open(os.path.join(ROOT, "config.example.ini"), "w") as handle:
        handle.write(example_ini() + "\n")
    path = os.path.join(ROOT, "README.md")
    with open(path) as handle:
        readme = handle.read()
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as handle:
        handle.write(f"{head}{START}\n{markdown_reference()}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
