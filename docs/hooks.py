"""MkDocs hook: links written for the repository also work on the site.

`docs/` holds symlinks to `../benchmarks`, `../notebooks` and `../exports`, so their pages (the
benchmark records, the notebooks, the model cards) are part of the site. Every page links as a
reader of the repository sees it (`../exports/gan/README.md` from `docs/index.md`,
`../docs/runtimes.md` from `benchmarks/README.md`); this hook rewrites each relative link that
leaves the docs folder into the site's path of the same file, when one of the symlinks reaches it.
A link that reaches nothing on the site is left as it is, for `mkdocs build --strict` to report.
"""

import os
import posixpath
import re

LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")


def _site_uri(target, docs, mounts):
    """The site's path (relative to the docs folder) of the real file `target`, or None."""
    if target.startswith(docs + os.sep):
        return os.path.relpath(target, docs).replace(os.sep, "/")
    for name, real in mounts.items():
        if target.startswith(real + os.sep):
            return posixpath.join(name, os.path.relpath(target, real).replace(os.sep, "/"))
    return None


def on_page_markdown(markdown, page, config, files):
    docs = os.path.realpath(config["docs_dir"])
    mounts = {entry.name: os.path.realpath(entry.path) for entry in os.scandir(docs) if entry.is_symlink()}
    here = os.path.dirname(os.path.realpath(page.file.abs_src_path))
    page_dir = posixpath.dirname(page.file.src_uri)

    def rewrite(match):
        start, link, anchor, end = match.groups()
        if "://" in link or link.startswith(("/", "mailto:")):
            return match.group(0)
        uri = _site_uri(os.path.realpath(os.path.join(here, link)), docs, mounts)
        if uri is None:
            return match.group(0)
        return f"{start}{posixpath.relpath(uri, page_dir or '.')}{anchor or ''}{end}"

    return LINK.sub(rewrite, markdown)
