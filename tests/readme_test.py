"""The README as a newcomer meets it: its Python runs, its links resolve, its headline
numbers are the committed results, and it stays short enough to read.

The ```python blocks of README.md run in order in one fresh Python process (so a later
block sees the names of an earlier one), in a fresh temporary folder, with this test
run's environment plus the checkout on PYTHONPATH (the README documents this checkout).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
DOCS = os.path.join(REPO, "docs")
MAX_CHARS = 20_000
FIRST_LINES = 80
# Words of the people who built r2u, not of its readers.
INTERNAL = re.compile(r"\bsessions?[\s-]*\d|\.\./shared", re.IGNORECASE)
_FENCE = re.compile(r"^```(\w*)\s*$")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_SRC = re.compile(r"""\b(?:src|href)=["']([^"']+)["']""")

# Runs each block; on an exception prints its number and traceback, exits 1.
_DRIVER = r"""
import json, sys, traceback
blocks = json.loads(sys.argv[1])
scope = {"__name__": "__main__"}
for number, (line, code) in enumerate(blocks, 1):
    print(f"--- README.md python block {number} (line {line})", flush=True)
    try:
        # Leading newlines make tracebacks name README.md's own line numbers.
        exec(compile("\n" * (line - 1) + code, "README.md", "exec"), scope)
    except BaseException:
        traceback.print_exc()
        print(f"README_BLOCK_FAILED {number} {line}", flush=True)
        sys.exit(1)
"""


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def code_blocks(text, language):
    """[(first code line number, code)] of the fenced blocks tagged `language`."""
    blocks, lines, start, inside = [], None, 0, False
    for number, line in enumerate(text.splitlines(), 1):
        fence = _FENCE.match(line)
        if not inside and fence:
            inside, start = True, number + 1
            lines = [] if fence[1] == language else None
        elif inside and line.rstrip() == "```":
            inside = False
            if lines is not None:
                blocks.append((start, "\n".join(lines) + "\n"))
        elif inside and lines is not None:
            lines.append(line)
    return blocks


def markdown_files():
    found = [README]
    for folder, _, names in os.walk(DOCS):
        found += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".md")]
    return found


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text):
    return {slug(m[1]) for m in re.finditer(r"^#{1,6}\s+(.*)$", text, re.MULTILINE)}


def links(text):
    """Link targets outside code blocks and spans: markdown links, images, src/href."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return _LINK.findall(text) + _HTML_SRC.findall(text)


class ReadmeCodeTest(unittest.TestCase):

    def test_the_python_blocks_run_in_order_in_one_fresh_process(self):
        blocks = code_blocks(read(README), "python")
        self.assertGreaterEqual(len(blocks), 3, "the quick start has gone")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (REPO, env.get("PYTHONPATH")) if p)
        with tempfile.TemporaryDirectory() as folder:
            proc = subprocess.run(
                [sys.executable, "-c", _DRIVER, json.dumps(blocks)], check=False,
                cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, timeout=900)
        failed = re.search(r"README_BLOCK_FAILED (\d+) (\d+)", proc.stdout)
        if proc.returncode or failed:
            where = (f"block {failed[1]} (README.md line {failed[2]})" if failed
                     else f"the driver (exit status {proc.returncode})")
            self.fail(f"README.md python {where} raised:\n{proc.stdout[-6000:]}")
        self.assertEqual(proc.stdout.count("--- README.md python block"), len(blocks))


class ReadmeShapeTest(unittest.TestCase):

    def test_readme_is_under_the_size_limit(self):
        self.assertLess(len(read(README)), MAX_CHARS)

    def test_install_and_the_two_command_start_come_first(self):
        head = "\n".join(read(README).splitlines()[:FIRST_LINES])
        for wanted in ("pip install .", "pip install -e '.[test]'", "make demo",
                       "make test", "r2u-train --dataset=",
                       "r2u-evaluate --model_dir="):
            self.assertIn(wanted, head, f"not within the first {FIRST_LINES} lines")

    def test_every_relative_link_points_to_an_existing_file(self):
        broken = []
        for path in markdown_files():
            text = read(path)
            for target in links(text):
                if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                    continue  # https:, mailto:
                file, _, fragment = target.partition("#")
                full = (os.path.normpath(os.path.join(os.path.dirname(path), file))
                        if file else path)
                name = os.path.relpath(path, REPO)
                if not os.path.exists(full):
                    broken.append(f"{name}: {target}")
                elif fragment and full.endswith(".md") and \
                        fragment not in anchors(read(full)):
                    broken.append(f"{name}: {target} (no such heading)")
        self.assertEqual(broken, [])

    def test_no_internal_words(self):
        found = []
        for path in markdown_files():
            for number, line in enumerate(read(path).splitlines(), 1):
                for match in INTERNAL.finditer(line):
                    found.append(f"{os.path.relpath(path, REPO)}:{number}: {match[0]}")
        self.assertEqual(found, [])

    def test_the_headline_rows_are_the_committed_results(self):
        rows = [line for line in read(README).splitlines()
                if re.search(r"\(benchmarks/results/[\w.-]+\.json\)\s*\|\s*$", line)]
        self.assertEqual(len(rows), 4, rows)
        for row in rows:
            name = re.search(r"\((benchmarks/results/[\w.-]+\.json)\)", row)[1]
            result = json.loads(read(os.path.join(REPO, name)))
            evaluation = result["evaluation"]
            if result["dataset"] == "drive":
                part, metric = evaluation["pooled"], "f1"
            else:
                part, metric = evaluation["per_image_mean"], "jaccard"
            threshold = evaluation["inference"]["threshold"]
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            self.assertIn(f"{part[metric]:.4f} (t={threshold:.2f})", cells[3], name)
            self.assertEqual(cells[4], f"{part['auc']:.4f}", name)
            self.assertIn(f"{result['steps']:,} steps", cells[2], name)
            self.assertIn(f"{round(result['train_seconds'] / 60)} min", cells[2], name)

    def test_the_own_data_figures_are_the_committed_result(self):
        text = " ".join(read(README).split())
        found = re.search(r"Dice of ([\d.]+) for the nerve and ([\d.]+) for the vessel "
                          r"\(mean ([\d.]+), ([\d,]+) steps: \[([\w.-]+)\]", text)
        self.assertIsNotNone(found, "the USGRA-Seg sentence of 'Your own data'")
        result = json.loads(read(os.path.join(REPO, "benchmarks", "results", found[5])))
        pooled = result["evaluation"]["pooled"]
        self.assertEqual(found[1], f"{pooled['per_class']['nerve']['dice']:.3f}")
        self.assertEqual(found[2], f"{pooled['per_class']['vessel']['dice']:.3f}")
        self.assertEqual(found[3], f"{pooled['dice']:.3f}")
        self.assertEqual(found[4], f"{result['steps']:,}")


class CitationTest(unittest.TestCase):

    def setUp(self):
        self.text = read(os.path.join(REPO, "CITATION.cff"))
        setup = read(os.path.join(REPO, "setup.cfg"))
        self.version = re.search(r"^version\s*=\s*(\S+)", setup, re.MULTILINE)[1]

    def test_citation_fields_without_a_yaml_parser(self):
        for line in ("cff-version: 1.2.0", "title: r2u", "license: Apache-2.0",
                     f'version: "{self.version}"', "arXiv:1802.06955"):
            self.assertIn(line, self.text)

    def test_licence_is_the_full_apache_2_text(self):
        text = read(os.path.join(REPO, "LICENSE"))
        for part in ("Apache License", "Version 2.0, January 2004",
                     "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
                     "9. Accepting Warranty or Additional Liability.",
                     "END OF TERMS AND CONDITIONS",
                     "APPENDIX: How to apply the Apache License to your work."):
            self.assertIn(part, text)
        self.assertIn("license = Apache-2.0", read(os.path.join(REPO, "setup.cfg")))


if __name__ == "__main__":
    unittest.main()
