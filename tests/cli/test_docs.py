"""README.md and docs/ stay true: links, anchors, named files, commands, length.

A page moved, a config renamed or a section retitled breaks a newcomer's first hour
without breaking any code; these tests make it fail, naming the page and what it names.
"""

import configparser
import pathlib
import re

import pytest

from sfg_app.config import settings_from_text

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 150

FENCED = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?)\s*$", re.MULTILINE)
URL_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*:")
#: Repository paths that commands and text name in code (`configs/demo.ini`).
REPO_PATH = re.compile(r"(?:configs|scripts|tests|sfg_app|docs|\.ci)/[\w./-]*")
#: A command's first word that names an sfg command (the package `sfg_app` is not one).
SFG_COMMAND = re.compile(r"sfg_(?!app\b)[a-z]+")
#: An inline span that is a command with options (`sfg_groups --config ...`); a bare
#: `sfg_fixed` in prose is a method's name.
INLINE_COMMAND = re.compile(r"(sfg_[a-z]+) +-")


def page_id(page):
    return str(page.relative_to(ROOT))


def text_of(page):
    return page.read_text(encoding="utf-8")


def prose(page):
    """The page without its fenced code, where `[x](y)` and `# x` are not markup."""
    return FENCED.sub("", text_of(page))


def code_snippets(page):
    """Fenced blocks and inline code spans: where the pages spell commands and paths."""
    text = text_of(page)
    return [body for _, body in FENCED.findall(text)] + INLINE_CODE.findall(prose(page))


def sfg_command_words(page):
    """First words of the commands in fenced blocks and of inline commands with options."""
    words = [match.group(1) for span in INLINE_CODE.findall(prose(page))
             if (match := INLINE_COMMAND.match(span))]
    for _, body in FENCED.findall(text_of(page)):
        for command in re.split(r"&&|\|\||[|;\n]", body):
            if command.split() and SFG_COMMAND.fullmatch(command.split()[0]):
                words.append(command.split()[0])
    return words


def anchors(page):
    """GitHub's heading ids: lower case, punctuation dropped, spaces as hyphens."""
    seen, ids = {}, set()
    for title in HEADING.findall(prose(page)):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    return ids


def relative_links(page):
    return [target for target in LINK.findall(prose(page)) if not URL_SCHEME.match(target)]


def console_scripts():
    """The commands setup.py installs, read from its text so the check needs no reinstall."""
    setup = (ROOT / "setup.py").read_text(encoding="utf-8")
    return set(re.findall(r'"(sfg_\w+)=sfg_app\.cli\.\w+:main"', setup))


def ini_sections(*texts):
    parser = configparser.ConfigParser(interpolation=None)
    for text in texts:
        parser.read_string(text)
    return {name: dict(parser[name]) for name in parser.sections()}


def test_readme_is_short():
    lines = text_of(README).splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; expected at most {README_MAX_LINES}: move the "
        "detail to a page under docs/ and link it")


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_and_anchors_resolve(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(f"{target} (no such file in the repository)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {page_id(resolved)})")
    assert not broken, f"{page_id(page)} links to: " + "; ".join(broken)


def test_every_docs_page_is_linked_from_another_page():
    linked = set()
    for page in PAGES:
        for target in relative_links(page):
            path = target.partition("#")[0]
            if path and (page.parent / path).resolve() != page.resolve():
                linked.add((page.parent / path).resolve())
    orphans = [page_id(page) for page in PAGES[1:] if page.resolve() not in linked]
    assert not orphans, f"pages no other page links to: {orphans}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_configs_and_files_named_in_code_exist(page):
    missing = []
    for snippet in code_snippets(page):
        for config in re.findall(r"--config[ =](\S+)", snippet):
            if not (ROOT / config).is_file():
                missing.append(f"--config {config}")
        for path in REPO_PATH.findall(snippet):
            if not (ROOT / path.rstrip(".")).exists():
                missing.append(path)
    assert not missing, f"{page_id(page)} names files the repository lacks: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_sfg_commands_are_console_scripts(page):
    declared = console_scripts()
    assert declared, "setup.py declares no sfg_* console script"
    unknown = set(sfg_command_words(page)) - declared
    assert not unknown, (f"{page_id(page)} names commands setup.py does not install: "
                         f"{sorted(unknown)}; installed: {sorted(declared)}")


def test_readme_ini_is_what_three_tasks_adds_to_the_demo():
    blocks = [body for language, body in FENCED.findall(text_of(README)) if language == "ini"]
    assert len(blocks) == 1, "README.md should show one ini block: the third task"
    demo = (ROOT / "configs" / "demo.ini").read_text(encoding="utf-8")
    three_tasks = (ROOT / "configs" / "three_tasks.ini").read_text(encoding="utf-8")
    assert ini_sections(demo, blocks[0]) == ini_sections(three_tasks), (
        "README.md's ini block is not what configs/three_tasks.ini adds to configs/demo.ini")


@pytest.mark.parametrize("page", PAGES[1:], ids=page_id)
def test_docs_ini_examples_load(page, tmp_path):
    for body in (body for language, body in FENCED.findall(text_of(page)) if language == "ini"):
        settings = settings_from_text(body, "ini", page_id(page), base_dir=tmp_path)
        assert settings.system.model_dir.is_relative_to(tmp_path)
