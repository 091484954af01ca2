"""A griffe extension for the API reference (docs/api.md; mkdocs.yml loads it).

The package's docstrings cross-reference in Sphinx roles (``:func:`label_images```,
``:class:`~.store.StoreError```), which Markdown would print as written. This shows each
role as the code it names: the target without a leading dot, or with ``~`` its last
part, as Sphinx does. The docstrings themselves are left as they are.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|attr|data|exc|obj|const|term):`(~?)\.?([^`]+)`")


def _code(m: re.Match) -> str:
    target = m[2]
    return f"`{target.rsplit('.', 1)[-1] if m[1] else target}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
